package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Disabling a user with more login sessions than one Badger transaction
// can delete works: the user's tokens stop at once, every session is ended,
// and enabling the user again brings back the permanent token only.
func TestDisableUserWithManySessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		const n = 40_000
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "flood", false)
		perm, _, _ := mustToken(t, s, "flood", "ci", Permanent, clock.Now().Add(time.Hour))
		sessions := make([]string, 0, n)
		batch := make([]NewToken, MaxBatch)
		for i := range batch {
			batch[i] = NewToken{User: "flood", Kind: Temporary, ExpiresAt: clock.Now().Add(12 * time.Hour)}
		}
		for len(sessions) < n {
			secrets, _, err := s.CreateTokens(context.Background(), batch)
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, secrets...)
		}

		disabled := true
		if _, err := s.UpdateUser(ctx, "flood", UserPatch{Disabled: &disabled}); err != nil {
			t.Fatalf("disabling a user with %d sessions: %v", n, err)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if _, r := s.Verify(sessions[i]); r != verifier.ResultUnknown {
				t.Fatalf("session %d verifies as %v after disabling; want it ended (unknown)", i, r)
			}
		}
		if _, r := s.Verify(perm); r != verifier.ResultDisabled {
			t.Fatalf("the permanent token verifies as %v; want disabled", r)
		}
		list, err := s.ListUserTokens(ctx, "flood")
		if err != nil || len(list) != 1 || list[0].Kind != Permanent {
			t.Fatalf("after disabling, the user lists %d tokens (%v); want only the permanent one", len(list), err)
		}
		if c := s.Alerting().CountTokens(); c[Temporary] != 0 {
			t.Fatalf("CountTokens = %v; want no live sessions", c)
		}
		a, err := s.ListAudit(ctx, 1)
		if err != nil || len(a) != 1 || a[0].Action != ActionUserUpdate || !strings.Contains(a[0].Detail, "login sessions ended") {
			t.Fatalf("last audit entry = %+v, %v; want the user update that ended the sessions", a, err)
		}

		enabled := false
		if _, err := s.UpdateUser(ctx, "flood", UserPatch{Disabled: &enabled}); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(perm); r != verifier.ResultOK {
			t.Fatalf("after enabling, the permanent token verifies as %v", r)
		}
		if _, r := s.Verify(sessions[0]); r != verifier.ResultUnknown {
			t.Fatalf("after enabling, an old session verifies as %v; sessions must stay ended", r)
		}
	})
}

// A new password ends the user's login sessions, except the one named in
// KeepSession (the caller's own); permanent tokens keep working.
func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("alice")
		mustCreateUser(t, s, "alice", false)
		perm, _, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		keep, kept, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		other, _, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		password := "a-new-password"
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Password: &password, KeepSession: kept.ID}); err != nil {
			t.Fatal(err)
		}
		for secret, want := range map[string]verifier.Result{keep: verifier.ResultOK, other: verifier.ResultUnknown, perm: verifier.ResultOK} {
			if _, r := s.Verify(secret); r != want {
				t.Errorf("after the password change a %s token verifies as %v; want %v", secret[:10], r, want)
			}
		}
		if a, err := s.ListAudit(ctx, 1); err != nil || !strings.Contains(a[0].Detail, "password, other login sessions ended") {
			t.Fatalf("audit = %+v, %v", a, err)
		}

		// Without KeepSession (an administrator's reset), every session ends.
		password = "reset-by-an-admin"
		if _, err := s.UpdateUser(ctxAs("root"), "alice", UserPatch{Password: &password}); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(keep); r != verifier.ResultUnknown {
			t.Fatalf("after a reset the remaining session verifies as %v", r)
		}
		if _, r := s.Verify(perm); r != verifier.ResultOK {
			t.Fatalf("after a reset the permanent token verifies as %v", r)
		}
	})
}
