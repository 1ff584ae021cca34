package storage_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
)

// TestReusedSlotIsANewToken deletes a token that was used (so its identity
// is cached and its last use queued for the flush) and creates another
// that takes over its slot: the new token must verify as itself, and the
// flush must write nothing on the old token's behalf.
func TestReusedSlotIsANewToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", true)
		oldSec, old, _ := mustToken(t, s, "alice", "old", Permanent, clock.Now().Add(time.Hour))
		oldSlot, _ := s.SlotOf(oldSec)
		clock.Advance(2 * time.Second)
		if _, r := s.Verify(oldSec); r != ResultOK {
			t.Fatalf("Verify(old) = %v", r)
		}
		if err := s.DeleteToken(ctxAs("root"), "alice", old.ID); err != nil {
			t.Fatal(err)
		}
		newSec, created, _ := mustToken(t, s, "bob", "new", Permanent, clock.Now().Add(2*time.Hour))
		if slot, _ := s.SlotOf(newSec); slot != oldSlot {
			t.Fatalf("the new token took slot %d, not the freed slot %d; the test does not test reuse", slot, oldSlot)
		}

		if _, r := s.Verify(oldSec); r != ResultUnknown {
			t.Fatalf("Verify(deleted token) = %v, want unknown", r)
		}
		// Not used yet: the old token's queued last use must not land on it.
		s.FlushLastUsed()
		if used := storedLastUse(t, s, created.ID); used != 0 {
			t.Fatalf("new, unused token has a flushed last use %d", used)
		}
		if used := storedLastUse(t, s, old.ID); used != 0 {
			t.Fatal("the deleted token's last use was written after its deletion")
		}

		clock.Advance(2 * time.Second)
		id, r := s.Verify(newSec)
		if r != ResultOK || id.Username != "bob" || !id.Admin || id.TokenID != created.ID ||
			id.Metadata["token_id"] != created.ID || id.Metadata["admin"] != "true" {
			t.Fatalf("Verify(new token in a reused slot) = %+v, %v", id, r)
		}
		// Its use is queued (the old occupant's queued flag did not stick).
		s.FlushLastUsed()
		if used := storedLastUse(t, s, created.ID); used != clock.Now().UnixNano() {
			t.Fatalf("last use of the new token = %d; want %v", used, clock.Now())
		}
	})
}

// TestIdleIdentitiesArePruned checks that the cache of identities holds
// only tokens used recently, and that a pruned token verifies as before.
func TestIdleIdentitiesArePruned(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		sec, tok, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if _, r := s.Verify(sec); r != ResultOK || s.CachedIdentities() != 1 {
			t.Fatalf("after one use: %v, %d cached identities", r, s.CachedIdentities())
		}
		clock.Advance(IdentityIdle - time.Second)
		s.PruneIdentities(clock.Now())
		if s.CachedIdentities() != 1 {
			t.Fatal("an identity used within identityIdle was pruned")
		}
		clock.Advance(2 * time.Second)
		s.PruneIdentities(clock.Now())
		if s.CachedIdentities() != 0 {
			t.Fatal("an idle identity was kept")
		}
		if id, r := s.Verify(sec); r != ResultOK || id.TokenID != tok.ID || id.Metadata["token_id"] != tok.ID {
			t.Fatalf("Verify after pruning = %+v, %v", id, r)
		}
	})
}

// TestDeletedUsersNumberIsNotReused deletes a user with a token and creates
// the name again: the new user gets a new number, and the old token stays
// unknown.
func TestDeletedUsersNumberIsNotReused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)
		oldSec, _, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		oldNum, _ := s.UserNumber("alice")
		if err := s.DeleteUser(ctxAs("root"), "alice"); err != nil {
			t.Fatal(err)
		}
		if _, found := s.UserNumber("alice"); found {
			t.Fatal("a deleted user is still in the user table")
		}
		if !s.UserNumberDeleted(oldNum) {
			t.Fatal("a deleted user's number does not point at a deleted user")
		}
		mustCreateUser(t, s, "alice", false)
		if num, _ := s.UserNumber("alice"); num == oldNum {
			t.Fatalf("the new alice reuses number %d", num)
		}
		newSec, _, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if _, r := s.Verify(oldSec); r != ResultUnknown {
			t.Fatalf("old alice's token: %v, want unknown", r)
		}
		if id, r := s.Verify(newSec); r != ResultOK || id.Username != "alice" {
			t.Fatalf("new alice's token: %+v, %v", id, r)
		}
	})
}

// TestSlotReuseUnderConcurrentVerify churns tokens (create, delete, so
// slots are reused at once) while other goroutines verify: a secret that
// verifies must always come back with its own token's id, and a deleted
// token must never verify once DeleteToken has returned.
func TestSlotReuseUnderConcurrentVerify(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", true)
		stable, stableTok, _ := mustToken(t, s, "alice", "stable", Permanent, clock.Now().Add(time.Hour))
		type pair struct{ secret, id string }
		var current atomic.Pointer[pair]
		current.Store(&pair{stable, stableTok.ID})

		stop := make(chan struct{})
		var wg sync.WaitGroup
		// One core is left to the writer: with every core spinning, Go's
		// scheduler looks for ready network connections only every 10ms,
		// and each of PostgreSQL's round trips would wait that long.
		for range max(1, runtime.GOMAXPROCS(0)-1) {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					for _, p := range []*pair{{stable, stableTok.ID}, current.Load()} {
						id, r := s.Verify(p.secret)
						if r == ResultOK && (id.TokenID != p.id || id.Metadata["token_id"] != p.id) {
							t.Errorf("secret of %s verified as token %s (metadata %s)", p.id, id.TokenID, id.Metadata["token_id"])
							return
						}
					}
					if _, r := s.Verify(stable); r != ResultOK {
						t.Errorf("the stable token verified as %v during the churn", r)
						return
					}
				}
			})
		}
		for i := range 300 {
			user, kind := "alice", Permanent
			if i%2 == 1 {
				user, kind = "bob", Temporary
			}
			sec, tok, _ := mustToken(t, s, user, fmt.Sprintf("churn-%d", i), kind, clock.Now().Add(time.Hour))
			current.Store(&pair{sec, tok.ID})
			if err := s.DeleteToken(ctxAs("root"), user, tok.ID); err != nil {
				t.Fatal(err)
			}
			if _, r := s.Verify(sec); r != ResultUnknown {
				t.Fatalf("churn token %d verifies as %v after its deletion", i, r)
			}
		}
		close(stop)
		wg.Wait()
	})
}
