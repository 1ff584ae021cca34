package storage_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

var catalogue = []Scope{{Name: "deploy", Description: "Trigger deployments"}, {Name: "reports:read"}, {Name: "reports:write"}}

// The rules of section 7 as the store keeps them: ceilings, defaults,
// narrowing only, rotation keeping both, and the verifier deciding from
// the token within its user's ceiling at each request.
func TestScopeRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		s.SetScopes(catalogue)
		ctx := ctxAs("root")
		if _, err := s.CreateUser(ctx, NewUser{Username: "ci", Password: "pw-ci", Scopes: []string{"reports:read", "deploy"}}); err != nil {
			t.Fatal(err)
		}
		_, err := s.CreateUser(ctx, NewUser{Username: "x", Password: "pw-x", Scopes: []string{"nope"}})
		wantErr(t, err, ErrInvalid, `scope "nope" is not declared`)

		sec, tok, err := s.CreateToken(ctx, NewToken{User: "ci", Name: "full", Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
		if err != nil || !slices.Equal(tok.Scopes, []string{"deploy", "reports:read"}) {
			t.Fatalf("default scopes: %v, %v", tok.Scopes, err)
		}
		_, _, err = s.CreateToken(ctx, NewToken{User: "ci", Name: "w", Kind: Permanent, ExpiresAt: t0.Add(time.Hour), Scopes: []string{"reports:write"}})
		wantErr(t, err, ErrInvalid, `user "ci" does not hold scope "reports:write"`)

		v := s.Verifier()
		deploy, err := v.Policy([]string{"deploy"}, []string{"deploy", "reports:read", "reports:write"}, false, false)
		if err != nil {
			t.Fatal(err)
		}
		verify := func() verifier.Result {
			_, r := v.VerifyFrom(sec, &deploy, netip.MustParseAddr("10.1.2.3"))
			return r
		}
		if r := verify(); r != verifier.ResultOK {
			t.Fatalf("token with deploy: %v", r)
		}

		_, err = s.UpdateToken(ctx, "ci", tok.ID, TokenPatch{Scopes: &[]string{"deploy", "reports:write"}})
		wantErr(t, err, ErrInvalid, `does not hold scope "reports:write"; scopes can only be removed`)
		_, err = s.UpdateToken(ctx, "ci", tok.ID, TokenPatch{AllowedCIDRs: &[]string{"10.0.0.1/8"}})
		wantErr(t, err, ErrInvalid, "did you mean 10.0.0.0/8")
		_, err = s.UpdateToken(ctx, "bob", tok.ID, TokenPatch{Scopes: &[]string{}})
		wantErr(t, err, ErrNotFound, `user "bob" has no token`)

		got, err := s.UpdateToken(ctx, "ci", tok.ID, TokenPatch{AllowedCIDRs: &[]string{"192.168.0.0/16", "10.0.0.0/8"}})
		if err != nil || !slices.Equal(got.AllowedCIDRs, []string{"10.0.0.0/8", "192.168.0.0/16"}) || !slices.Equal(got.Scopes, tok.Scopes) {
			t.Fatalf("networks replaced: %+v, %v", got, err)
		}
		if _, r := v.VerifyFrom(sec, &deploy, netip.MustParseAddr("172.16.0.1")); r != verifier.ResultNetworkNotAllowed {
			t.Errorf("from outside the networks: %v", r)
		}

		if _, err := s.UpdateUser(ctx, "ci", UserPatch{Scopes: &[]string{"reports:read"}}); err != nil {
			t.Fatal(err)
		}
		if r := verify(); r != verifier.ResultInsufficientScope {
			t.Errorf("deploy taken from the user: %v, want insufficient_scope", r)
		}
		if _, err := s.UpdateUser(ctx, "ci", UserPatch{Scopes: &[]string{"reports:read", "deploy"}}); err != nil {
			t.Fatal(err)
		}
		if got, err = s.UpdateToken(ctx, "ci", tok.ID, TokenPatch{Scopes: &[]string{"reports:read"}}); err != nil || !slices.Equal(got.Scopes, []string{"reports:read"}) {
			t.Fatalf("narrowed: %v, %v", got.Scopes, err)
		}
		if r := verify(); r != verifier.ResultInsufficientScope {
			t.Errorf("deploy taken from the token: %v, want insufficient_scope", r)
		}

		_, rotated, err := s.RotateToken(ctx, "ci", tok.ID, 0, t0.Add(time.Hour))
		if err != nil || !slices.Equal(rotated.Scopes, []string{"reports:read"}) || !slices.Equal(rotated.AllowedCIDRs, got.AllowedCIDRs) {
			t.Fatalf("rotated: %+v, %v", rotated, err)
		}

		_, session, err := s.CreateToken(ctx, NewToken{User: "ci", Kind: Temporary, ExpiresAt: t0.Add(time.Hour), Scopes: []string{"deploy"}})
		if err != nil || !slices.Equal(session.Scopes, []string{"deploy"}) {
			t.Fatalf("a session asking for fewer scopes: %v, %v", session.Scopes, err)
		}

		audit, err := s.ListAudit(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		var updates int
		for _, e := range audit {
			if e.Action == ActionTokenUpdate {
				updates++
			}
		}
		if updates != 2 {
			t.Errorf("%d token_update entries; want 2 (networks, then scopes)", updates)
		}
	})
}

// What each token really uses: the scopes its requests needed, those a
// shadow route found missing, and its last address, gathered in memory
// and written with the last-use batch; in a fleet, each node's merge.
func TestScopeUsageIsRecorded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		s.SetScopes(catalogue)
		ctx := ctxAs("root")
		if _, err := s.CreateUser(ctx, NewUser{Username: "ci", Password: "pw-ci", Scopes: []string{"deploy", "reports:read"}}); err != nil {
			t.Fatal(err)
		}
		sec, tok, err := s.CreateToken(ctx, NewToken{User: "ci", Name: "ci", Kind: Permanent, ExpiresAt: t0.Add(time.Hour), Scopes: []string{"deploy"}})
		if err != nil {
			t.Fatal(err)
		}
		v := s.Verifier()
		declared := []string{"deploy", "reports:read", "reports:write"}
		deploy, _ := v.Policy([]string{"deploy"}, declared, false, false)
		readShadow, _ := v.Policy([]string{"reports:read"}, declared, true, false)

		if _, r := v.VerifyFrom(sec, &deploy, netip.MustParseAddr("10.1.2.3")); r != verifier.ResultOK {
			t.Fatal(r)
		}
		neededAt := clock.Now()
		clock.Advance(100 * time.Millisecond) // within a second: only a new scope is recorded at once
		if _, r := v.VerifyFrom(sec, &readShadow, netip.MustParseAddr("::ffff:10.1.2.4")); r != verifier.ResultOK {
			t.Fatal(r)
		}
		missingAt := clock.Now()
		s.FlushLastUsed()

		got, err := s.GetUserToken(ctx, "ci", tok.ID)
		if err != nil {
			t.Fatal(err)
		}
		// A scope's time is that of the token's last use in the batch it
		// was needed in: within a flush interval of the request.
		use := got.ScopeUsage
		if got.LastUsedIP != "10.1.2.4" || len(use) != 2 ||
			use["deploy"].LastNeededAt == nil || use["deploy"].LastNeededAt.Before(neededAt) || use["deploy"].LastNeededAt.After(missingAt) ||
			use["deploy"].LastMissingAt != nil ||
			use["reports:read"].LastMissingAt == nil || !use["reports:read"].LastMissingAt.Equal(missingAt) {
			t.Fatalf("after the flush: last_used_ip %q, scope_usage %+v; want 10.1.2.4, deploy needed by %v, reports:read missing at %v",
				got.LastUsedIP, use, neededAt, missingAt)
		}

		// Another node's older observation changes nothing; a later one of
		// one scope moves that scope only.
		clock.Advance(time.Minute)
		if _, r := v.VerifyFrom(sec, &deploy, netip.MustParseAddr("10.9.9.9")); r != verifier.ResultOK {
			t.Fatal(r)
		}
		s.FlushLastUsed()
		got, _ = s.GetUserToken(ctx, "ci", tok.ID)
		if got.LastUsedIP != "10.9.9.9" || !got.ScopeUsage["deploy"].LastNeededAt.Equal(clock.Now()) || !got.ScopeUsage["reports:read"].LastMissingAt.Equal(missingAt) {
			t.Fatalf("after a later use: %q %+v", got.LastUsedIP, got.ScopeUsage)
		}
	})
}
