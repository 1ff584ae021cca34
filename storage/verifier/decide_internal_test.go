package verifier

import (
	"net/netip"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Both of Verify's paths decide every state of a token and its user alike:
// the hot table's, for a token in use, and the locked one. Each row puts a
// token in use (so the hot table holds it), brings it and its user to the
// row's state, and asks both paths at a now half a second after that use
// (so the hot table may answer: no last use is due), on the edges too: a
// token expires, and a revocation takes effect, at its time exactly.
func TestBothPathsDecideAlike(t *testing.T) {
	const (
		none = iota
		future
		exactlyNow
		past
	)
	at := func(now time.Time, when int) int64 {
		switch when {
		case future:
			return now.Add(time.Nanosecond).UnixNano()
		case exactlyNow:
			return now.UnixNano()
		case past:
			return now.Add(-time.Nanosecond).UnixNano()
		}
		return 0
	}
	admin := &Policy{Admin: true}
	// Policies are compiled on the verifier of each row, below.
	declared := []string{"deploy", "reports:read", "reports:write"}
	deploy := func(v *Verifier) *Policy { return mustPolicy(t, v, []string{"deploy"}, declared, false, false) }
	deployShadow := func(v *Verifier) *Policy { return mustPolicy(t, v, []string{"deploy"}, declared, true, false) }
	both := func(v *Verifier) *Policy {
		return mustPolicy(t, v, []string{"deploy", "reports:read"}, declared, false, false)
	}
	office := netip.MustParseAddr("10.1.2.3")
	rows := []struct {
		name              string
		expires, revoked  int // expires is never none
		user              User
		deleteUser        bool
		policy            *Policy
		scoped            func(*Verifier) *Policy // the policy, when it names scopes
		tokenScopes       string
		networks          string
		client            netip.Addr
		want              Result
		identityOfRefusal bool // the refusal says whose token it was
	}{
		{name: "scope held", expires: future, user: User{Scopes: "deploy"}, tokenScopes: "deploy", scoped: deploy, want: ResultOK},
		{name: "scope held, all of two", expires: future, user: User{Scopes: "deploy reports:read"}, tokenScopes: "deploy reports:read", scoped: both, want: ResultOK},
		{name: "one of two scopes missing", expires: future, user: User{Scopes: "deploy reports:read"}, tokenScopes: "deploy", scoped: both, want: ResultInsufficientScope, identityOfRefusal: true},
		{name: "scope not on the token", expires: future, user: User{Scopes: "deploy"}, tokenScopes: "reports:read", scoped: deploy, want: ResultInsufficientScope, identityOfRefusal: true},
		{name: "scope taken from the user", expires: future, user: User{Scopes: "reports:read"}, tokenScopes: "deploy", scoped: deploy, want: ResultInsufficientScope, identityOfRefusal: true},
		{name: "administrator: the token's scopes", expires: future, user: User{Admin: true}, tokenScopes: "deploy", scoped: deploy, want: ResultOK},
		{name: "administrator without the scope on the token", expires: future, user: User{Admin: true}, tokenScopes: "reports:read", scoped: deploy, want: ResultInsufficientScope, identityOfRefusal: true},
		{name: "a scope this node does not declare", expires: future, user: User{Scopes: "deploy elsewhere"}, tokenScopes: "deploy elsewhere", scoped: deploy, want: ResultInsufficientScope, identityOfRefusal: true},
		{name: "undeclared scope taken from the user", expires: future, user: User{Scopes: "deploy"}, tokenScopes: "deploy elsewhere", scoped: deploy, want: ResultOK},
		{name: "undeclared scope, unscoped route", expires: future, user: User{Scopes: "elsewhere"}, tokenScopes: "elsewhere", want: ResultOK},
		{name: "shadow: missing scope passes", expires: future, user: User{}, scoped: deployShadow, want: ResultOK},
		{name: "shadow, token revoked", expires: future, revoked: past, user: User{}, scoped: deployShadow, want: ResultRevoked},
		{name: "no scope, unscoped route", expires: future, user: User{}, want: ResultOK},
		{name: "scoped route, token expired", expires: past, user: User{Scopes: "deploy"}, tokenScopes: "deploy", scoped: deploy, want: ResultExpired},
		{name: "allowed network", expires: future, user: User{}, networks: "10.0.0.0/8", client: office, want: ResultOK},
		{name: "allowed network, IPv4-mapped client", expires: future, user: User{}, networks: "10.0.0.0/8", client: netip.MustParseAddr("::ffff:10.1.2.3"), want: ResultOK},
		{name: "allowed network, second prefix", expires: future, user: User{}, networks: "192.168.0.0/16 2001:db8::/32", client: netip.MustParseAddr("2001:db8::1"), want: ResultOK},
		{name: "outside the allowed networks", expires: future, user: User{}, networks: "10.0.0.0/8", client: netip.MustParseAddr("10.255.255.255").Next(), want: ResultNetworkNotAllowed, identityOfRefusal: true},
		{name: "client unknown, networks restricted", expires: future, user: User{}, networks: "10.0.0.0/8", want: ResultNetworkNotAllowed, identityOfRefusal: true},
		{name: "outside the networks, on a scoped route it lacks", expires: future, user: User{}, networks: "10.0.0.0/8", scoped: deploy, want: ResultNetworkNotAllowed, identityOfRefusal: true},
		{name: "outside the networks, revoked", expires: future, revoked: past, user: User{}, networks: "10.0.0.0/8", want: ResultRevoked},
		{name: "valid", expires: future, user: User{}, want: ResultOK},
		{name: "valid, admin route, admin", expires: future, user: User{Admin: true}, policy: admin, want: ResultOK},
		{name: "valid, admin route, not admin", expires: future, user: User{}, policy: admin, want: ResultForbidden, identityOfRefusal: true},
		{name: "expires exactly now", expires: exactlyNow, user: User{}, want: ResultExpired},
		{name: "expired a nanosecond ago", expires: past, user: User{}, want: ResultExpired},
		{name: "revoked a nanosecond from now", expires: future, revoked: future, user: User{}, want: ResultOK},
		{name: "revoked exactly now", expires: future, revoked: exactlyNow, user: User{}, want: ResultRevoked},
		{name: "revoked a nanosecond ago", expires: future, revoked: past, user: User{}, want: ResultRevoked},
		{name: "revoked and expired: the revocation wins", expires: exactlyNow, revoked: past, user: User{}, want: ResultRevoked},
		{name: "user disabled", expires: future, user: User{Disabled: true}, want: ResultDisabled},
		{name: "user disabled, admin route", expires: future, user: User{Admin: true, Disabled: true}, policy: admin, want: ResultDisabled},
		{name: "user disabled and token expired", expires: past, user: User{Disabled: true}, want: ResultExpired},
		{name: "user deleted", expires: future, deleteUser: true, want: ResultUnknown},
		{name: "user deleted, token revoked", expires: future, revoked: past, deleteUser: true, want: ResultUnknown},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			v, clock := newTestVerifier()
			now := t0.Add(time.Hour)
			v.PutUser(User{Name: "u", Admin: true})
			tok := newToken("u", secret.Permanent, time.Unix(0, at(now, row.expires)))
			tok.Scopes = []byte(row.tokenScopes)
			if row.scoped != nil {
				row.policy = row.scoped(v)
			}
			if err := v.PutToken(tok.Token); err != nil {
				t.Fatal(err)
			}
			clock.now = now.Add(-500 * time.Millisecond)
			if _, r := v.VerifyFrom(tok.secret, admin, row.client); r != ResultOK || !v.isHotFrom(tok.secret, admin, row.client) {
				t.Fatalf("in use: %v, hot %v; want ok, hot", r, v.isHotFrom(tok.secret, admin, row.client))
			}

			tok.RevokedAt = at(now, row.revoked)
			tok.Networks = []byte(row.networks)
			if err := v.PutToken(tok.Token); err != nil {
				t.Fatal(err)
			}
			row.user.Name = "u"
			v.PutUser(row.user)
			if row.deleteUser {
				v.RemoveUser("u")
			}
			if row.policy != nil && row.policy.required != 0 { // so that its use of the route's scopes is recorded
				v.VerifyFrom(tok.secret, row.policy, row.client)
			}
			clock.now = now

			hotID, hotR, answered := v.cur.Load().hot.find(tok.secret).decide(v.grants, now.UnixNano(), row.policy, row.client)
			if !answered {
				t.Fatal("the hot table did not answer for a token used half a second ago")
			}
			lockedID, lockedR := v.lockedVerify(tok.secret, row.policy, row.client)
			if hotR != row.want || lockedR != row.want {
				t.Fatalf("hot path: %v, locked path: %v; want %v", hotR, lockedR, row.want)
			}
			if hotID != lockedID {
				t.Fatalf("hot path's identity %+v, locked path's %+v", hotID, lockedID)
			}
			wantID := Identity{}
			if row.want == ResultOK || row.identityOfRefusal {
				wantID = Identity{Username: "u", TokenID: string(tok.ID), Kind: secret.Permanent, Admin: row.user.Admin, Hash: tok.Hash}
				wantID.Scopes = v.grants.maskOf([]byte(row.tokenScopes))
				if !row.user.Admin {
					wantID.Scopes &= v.grants.maskOf([]byte(row.user.Scopes))
				}
			}
			if hotID != wantID {
				t.Fatalf("identity %+v; want %+v", hotID, wantID)
			}
			if id, r := v.VerifyFrom(tok.secret, row.policy, row.client); r != row.want || id != wantID {
				t.Fatalf("Verify = %+v, %v; want %+v, %v", id, r, wantID, row.want)
			}
		})
	}
}

// A token whose use is due to be recorded, or whose slot no longer holds
// it, is not answered by the hot table: the locked path records the use,
// or finds that the token is gone.
func TestHotTableDefersWhatOnlyTheLockedPathCanDo(t *testing.T) {
	v, clock := newTestVerifier()
	tok := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	if _, r := v.Verify(tok.secret, nil); r != ResultOK || !v.isHot(tok.secret, nil) {
		t.Fatalf("after one use: %v, hot %v", r, v.isHot(tok.secret, nil))
	}
	clock.Advance(time.Second)
	if v.isHot(tok.secret, nil) {
		t.Fatal("a use a second after the last is answered by the hot table, which would not record it")
	}
	if _, r := v.Verify(tok.secret, nil); r != ResultOK || v.LastUsed(tok.Hash) != clock.now {
		t.Fatalf("the use was not recorded: %v, last used %v", r, v.LastUsed(tok.Hash))
	}
	v.RemoveToken(tok.Hash)
	if v.isHot(tok.secret, nil) {
		t.Fatal("the hot table answers for a removed token")
	}
	if _, r := v.Verify(tok.secret, nil); r != ResultUnknown {
		t.Fatalf("removed token: %v", r)
	}
}
