package storage_test

import (
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// hotToken creates a token for a new user "alice" and uses it until Verify
// answers it from the hot table, as it does for a token in use.
func hotToken(t *testing.T, s *Store, clock *FakeClock, kind TokenKind) (sec, id string) {
	t.Helper()
	mustCreateUser(t, s, "alice", false)
	sec, meta, _ := mustToken(t, s, "alice", "ci", kind, clock.Now().Add(time.Hour))
	if _, r := s.Verify(sec); r != ResultOK {
		t.Fatalf("new token: %v", r)
	}
	if !s.IsHot(sec) {
		t.Fatal("a token just used is not answered from the hot table")
	}
	return sec, meta.ID
}

// A token answered from the hot table sees every change to itself and its
// user on the very next call, exactly like a token that is not: the hot
// table may only say "valid" while the index would.
func TestHotTokenSeesEveryChange(t *testing.T) {
	ctx := ctxAs("root")
	cases := []struct {
		name   string
		kind   TokenKind
		change func(t *testing.T, s *Store, clock *FakeClock, sec, id string)
		want   VerifyResult
	}{
		{"rotated without grace", Permanent, func(t *testing.T, s *Store, clock *FakeClock, _, id string) {
			if _, _, err := s.RotateToken(ctx, "alice", id, 0, clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, ResultRevoked},
		{"past a rotation's grace, used a moment before", Permanent, func(t *testing.T, s *Store, clock *FakeClock, sec, id string) {
			if _, _, err := s.RotateToken(ctx, "alice", id, time.Minute, clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			usedJustBefore(t, s, clock, sec, time.Minute)
		}, ResultRevoked},
		{"deleted", Permanent, func(t *testing.T, s *Store, _ *FakeClock, _, id string) {
			if err := s.DeleteToken(ctx, "alice", id); err != nil {
				t.Fatal(err)
			}
		}, ResultUnknown},
		{"deleted, and its slot reused", Permanent, func(t *testing.T, s *Store, clock *FakeClock, _, id string) {
			if err := s.DeleteToken(ctx, "alice", id); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
			}
		}, ResultUnknown},
		{"logged out", Temporary, func(t *testing.T, s *Store, _ *FakeClock, _, id string) {
			if err := s.Logout(ctx, id); err != nil {
				t.Fatal(err)
			}
		}, ResultUnknown},
		{"expired, used a moment before", Permanent, func(t *testing.T, s *Store, clock *FakeClock, sec, _ string) {
			usedJustBefore(t, s, clock, sec, time.Hour)
		}, ResultExpired},
		{"user disabled", Permanent, func(t *testing.T, s *Store, _ *FakeClock, _, _ string) {
			if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(true)}); err != nil {
				t.Fatal(err)
			}
		}, ResultDisabled},
		{"user deleted", Permanent, func(t *testing.T, s *Store, _ *FakeClock, _, _ string) {
			if err := s.DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}, ResultUnknown},
		{"user deleted and created again", Permanent, func(t *testing.T, s *Store, _ *FakeClock, _, _ string) {
			if err := s.DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			mustCreateUser(t, s, "alice", true)
		}, ResultUnknown},
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
				if s.IsHot(sec) {
					t.Fatal("the hot table still answers for the token")
				}
			})
		})
	}
}

// usedJustBefore moves the clock to d from now, using the token, still
// valid and hot, half a second before: within a second of a use the hot
// table answers, so it must see the end by itself.
func usedJustBefore(t *testing.T, s *Store, clock *FakeClock, sec string, d time.Duration) {
	t.Helper()
	clock.Advance(d - 500*time.Millisecond)
	if _, r := s.Verify(sec); r != ResultOK || !s.IsHot(sec) {
		t.Fatalf("half a second before the end: %v, hot %v; want ok, from the hot table", r, s.IsHot(sec))
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
		for _, admin := range []bool{true, false} {
			if _, err := s.UpdateUser(ctxAs("root"), "alice", UserPatch{Admin: ptr(admin)}); err != nil {
				t.Fatal(err)
			}
			id, r := s.Verify(sec)
			if r != ResultOK || id.Admin != admin || id.Metadata["admin"] != map[bool]string{true: "true", false: "false"}[admin] {
				t.Fatalf("admin=%v: Verify = %+v, %v", admin, id, r)
			}
			if !s.IsHot(sec) {
				t.Fatalf("admin=%v: the token is not hot again after a use", admin)
			}
		}
	})
}

// A hot token still has its use recorded: the hot table sends a token
// to the locked path, which writes the last use, once a second.
func TestHotTokenLastUseStillRecorded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		sec, id := hotToken(t, s, clock, Permanent)
		clock.Advance(time.Minute)
		if s.IsHot(sec) {
			t.Fatal("a token unused for a minute is answered from the hot table; its use would not be recorded")
		}
		s.Verify(sec)
		used := clock.Now()
		got, err := s.GetToken(ctxAs("root"), id)
		if err != nil || got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last_used_at = %v (%v); want %v", got.LastUsedAt, err, used)
		}
		if !s.IsHot(sec) {
			t.Fatal("not hot again after the recorded use")
		}
	})
}

// Only verified tokens enter the hot table, and a token idle for
// IdentityIdle leaves it: the secrets it holds are those of tokens in use.
func TestHotTableHoldsOnlyTokensInUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "root", true)
		sec, _ := hotToken(t, s, clock, Permanent)
		unknown := secret.New(Permanent)
		for range 3 {
			if _, r := s.Verify(unknown); r != ResultUnknown {
				t.Fatalf("unknown token: %v", r)
			}
		}
		if s.HoldsSecret(unknown) {
			t.Fatal("an unknown secret is held in the hot table")
		}
		idle, _, _ := mustToken(t, s, "alice", "idle", Permanent, clock.Now().Add(2*IdentityIdle))
		s.Verify(idle)
		clock.Advance(IdentityIdle / 2)
		s.Verify(sec)
		clock.Advance(IdentityIdle/2 + time.Second)
		s.PruneIdentities(clock.Now())
		if s.HoldsSecret(idle) {
			t.Fatal("a token idle for IdentityIdle is still held after pruning")
		}
		if !s.HoldsSecret(sec) {
			t.Fatal("a token used within IdentityIdle was pruned")
		}
	})
}

// On a fleet, a revocation on one node reaches a token hot on another
// through the change feed, as it reaches the index.
func TestHotTokenRevokedOnAnotherNode(t *testing.T) {
	db := newTestDB(t, "postgres")
	clock := NewFakeClock(t0)
	a, b := db.open(t, clock), db.open(t, clock)
	mustCreateUser(t, a, "alice", false)
	sec, meta, _ := mustToken(t, a, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for !b.IsHot(sec) {
		if time.Now().After(deadline) {
			t.Fatal("node b never answered the token from its hot table")
		}
		b.Verify(sec)
		time.Sleep(time.Millisecond)
	}
	if err := a.DeleteToken(ctxAs("root"), "alice", meta.ID); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, r := b.Verify(sec)
		if r == ResultUnknown {
			return
		}
		if r != ResultOK || time.Now().After(deadline) {
			t.Fatalf("node b: Verify = %v after the deletion on node a", r)
		}
		time.Sleep(time.Millisecond)
	}
}
