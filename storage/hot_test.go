package storage_test

import (
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// hotToken creates a token for a new user "alice" and uses it once, so
// that the verifier answers it from its hot table from then on, as it does
// every token in use (the verifier's own tests check that it does).
func hotToken(t *testing.T, s *Store, clock *testtools.FakeClock, kind TokenKind) (sec, id string) {
	t.Helper()
	mustCreateUser(t, s, "alice", false)
	sec, meta, _ := mustToken(t, s, "alice", "ci", kind, clock.Now().Add(time.Hour))
	if _, r := s.Verify(sec); r != verifier.ResultOK {
		t.Fatalf("new token: %v", r)
	}
	return sec, meta.ID
}

// A token in use sees every change the rules make to itself and its user
// on the very next call: each rule publishes what the verifier needs.
func TestHotTokenSeesEveryChange(t *testing.T) {
	ctx := ctxAs("root")
	cases := []struct {
		name   string
		kind   TokenKind
		change func(t *testing.T, s *Store, clock *testtools.FakeClock, sec, id string)
		want   verifier.Result
	}{
		{"rotated without grace", Permanent, func(t *testing.T, s *Store, clock *testtools.FakeClock, _, id string) {
			if _, _, err := s.RotateToken(ctx, "alice", id, 0, clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, verifier.ResultRevoked},
		{"past a rotation's grace, used a moment before", Permanent, func(t *testing.T, s *Store, clock *testtools.FakeClock, sec, id string) {
			if _, _, err := s.RotateToken(ctx, "alice", id, time.Minute, clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			usedJustBefore(t, s, clock, sec, time.Minute)
		}, verifier.ResultRevoked},
		{"deleted", Permanent, func(t *testing.T, s *Store, _ *testtools.FakeClock, _, id string) {
			if err := s.DeleteToken(ctx, "alice", id); err != nil {
				t.Fatal(err)
			}
		}, verifier.ResultUnknown},
		{"deleted, and its slot reused", Permanent, func(t *testing.T, s *Store, clock *testtools.FakeClock, _, id string) {
			if err := s.DeleteToken(ctx, "alice", id); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
			}
		}, verifier.ResultUnknown},
		{"logged out", Temporary, func(t *testing.T, s *Store, _ *testtools.FakeClock, _, id string) {
			if err := s.Logout(ctx, id); err != nil {
				t.Fatal(err)
			}
		}, verifier.ResultUnknown},
		{"expired, used a moment before", Permanent, func(t *testing.T, s *Store, clock *testtools.FakeClock, sec, _ string) {
			usedJustBefore(t, s, clock, sec, time.Hour)
		}, verifier.ResultExpired},
		{"user disabled", Permanent, func(t *testing.T, s *Store, _ *testtools.FakeClock, _, _ string) {
			if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(true)}); err != nil {
				t.Fatal(err)
			}
		}, verifier.ResultDisabled},
		{"user deleted", Permanent, func(t *testing.T, s *Store, _ *testtools.FakeClock, _, _ string) {
			if err := s.DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}, verifier.ResultUnknown},
		{"user deleted and created again", Permanent, func(t *testing.T, s *Store, _ *testtools.FakeClock, _, _ string) {
			if err := s.DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			mustCreateUser(t, s, "alice", true)
		}, verifier.ResultUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, db *testDB) {
				s, clock := newTestStore(t, db)
				mustCreateUser(t, s, "root", true)
				sec, id := hotToken(t, s, clock, c.kind)
				c.change(t, s, clock, sec, id)
				if _, r := s.Verify(sec); r != c.want {
					t.Fatalf("after the change, Verify = %v; want %v", r, c.want)
				}
			})
		})
	}
}

// usedJustBefore moves the clock to d from now, using the token, still
// valid and hot, half a second before: within a second of a use the hot
// table answers, so it must see the end by itself.
func usedJustBefore(t *testing.T, s *Store, clock *testtools.FakeClock, sec string, d time.Duration) {
	t.Helper()
	clock.Advance(d - 500*time.Millisecond)
	if _, r := s.Verify(sec); r != verifier.ResultOK {
		t.Fatalf("half a second before the end: %v; want ok", r)
	}
	clock.Advance(500 * time.Millisecond)
}

// Promoting the user of a hot token changes the identity the next call
// returns; demoting changes it back.
func TestHotTokenFollowsItsUsersAdminState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "root", true)
		sec, _ := hotToken(t, s, clock, Permanent)
		for _, admin := range []bool{true, false, true} {
			if _, err := s.UpdateUser(ctxAs("root"), "alice", UserPatch{Admin: ptr(admin)}); err != nil {
				t.Fatal(err)
			}
			if id, r := s.Verify(sec); r != verifier.ResultOK || id.Admin != admin {
				t.Fatalf("admin=%v: Verify = %+v, %v", admin, id, r)
			}
		}
	})
}

// A token in use still has its use recorded, once a second at most.
func TestHotTokenLastUseStillRecorded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		sec, id := hotToken(t, s, clock, Permanent)
		clock.Advance(time.Minute)
		s.Verify(sec)
		used := clock.Now()
		clock.Advance(500 * time.Millisecond)
		s.Verify(sec) // within the second: not recorded again
		got, err := s.GetToken(ctxAs("root"), id)
		if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last_used_at = %v (%v); want %v", got.LastUsedAt, err, used)
		}
	})
}

// On a fleet, a revocation on one node reaches a token in use on another
// through the change feed.
func TestHotTokenRevokedOnAnotherNode(t *testing.T) {
	db := newTestDB(t, "postgres")
	clock := testtools.NewFakeClock(t0)
	a, b := db.open(t, clock), db.open(t, clock)
	mustCreateUser(t, a, "alice", false)
	sec, meta, _ := mustToken(t, a, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
	if _, r := b.Verify(sec); r != verifier.ResultOK {
		t.Fatalf("node b: Verify = %v before the deletion", r)
	}
	if err := a.DeleteToken(ctxAs("root"), "alice", meta.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, r := b.Verify(sec)
		if r == verifier.ResultUnknown {
			return
		}
		if r != verifier.ResultOK || time.Now().After(deadline) {
			t.Fatalf("node b: Verify = %v after the deletion on node a", r)
		}
		time.Sleep(time.Millisecond)
	}
}
