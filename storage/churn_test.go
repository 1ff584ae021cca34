package storage_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

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
						if r == verifier.ResultOK && id.TokenID != p.id {
							t.Errorf("secret of %s verified as token %s", p.id, id.TokenID)
							return
						}
					}
					if _, r := s.Verify(stable); r != verifier.ResultOK {
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
			if _, r := s.Verify(sec); r != verifier.ResultUnknown {
				t.Fatalf("churn token %d verifies as %v after its deletion", i, r)
			}
		}
		close(stop)
		wg.Wait()
	})
}
