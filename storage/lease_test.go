package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
)

// One holder at a time has a lease; it passes to another once it expires
// or is released, with a higher epoch, and the old holder's fenced writes
// are refused from then on.
func TestLeaseHasOneHolderAndFencesTheOldOne(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		_, tok, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(24*time.Hour))

		a, ok, err := s.Alerting().AcquireLease(ctx, "alerts", "node-a", 20*time.Second)
		if err != nil || !ok || a.Epoch != 1 {
			t.Fatalf("first AcquireLease = %+v, %v, %v", a, ok, err)
		}
		if cur, ok, err := s.Alerting().AcquireLease(ctx, "alerts", "node-b", 20*time.Second); err != nil || ok || cur.Holder != "node-a" {
			t.Fatalf("a second holder took a live lease: %+v, %v, %v", cur, ok, err)
		}
		clock.Advance(10 * time.Second)
		if renewed, ok, err := s.Alerting().AcquireLease(ctx, "alerts", "node-a", 20*time.Second); err != nil || !ok || renewed.Epoch != a.Epoch {
			t.Fatalf("renewal = %+v, %v, %v; want the same epoch", renewed, ok, err)
		}
		if err := s.Alerting().PutAlertStates(ctx, a, map[string]AlertState{tok.ID: {NotifiedDays: 30}}); err != nil {
			t.Fatalf("the holder's fenced write: %v", err)
		}

		clock.Advance(21 * time.Second) // node-a stopped renewing
		b, ok, err := s.Alerting().AcquireLease(ctx, "alerts", "node-b", 20*time.Second)
		if err != nil || !ok || b.Epoch != a.Epoch+1 {
			t.Fatalf("taking over an expired lease = %+v, %v, %v", b, ok, err)
		}
		if err := s.Alerting().PutAlertStates(ctx, a, map[string]AlertState{tok.ID: {NotifiedDays: 7}}); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("the old holder's fenced write = %v; want ErrLeaseLost", err)
		}
		if err := s.Alerting().PutAlertView(ctx, a, []byte(`{"old":true}`)); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("the old holder's view = %v; want ErrLeaseLost", err)
		}
		if st, _, _ := s.GetAlertState(ctx, tok.ID); st.NotifiedDays != 30 {
			t.Fatalf("a refused fenced write changed the state: %+v", st)
		}

		if err := s.Alerting().ReleaseLease(ctx, a); err != nil { // not a's any more: no effect
			t.Fatal(err)
		}
		if cur, ok, _ := s.Alerting().AcquireLease(ctx, "alerts", "node-c", time.Second); ok || cur.Holder != "node-b" {
			t.Fatalf("releasing a lost lease freed it: %+v", cur)
		}
		if err := s.Alerting().ReleaseLease(ctx, b); err != nil {
			t.Fatal(err)
		}
		// A released lease is free even to a node whose clock is behind
		// the releaser's.
		clock.Set(clock.Now().Add(-time.Minute))
		if c, ok, err := s.Alerting().AcquireLease(ctx, "alerts", "node-c", time.Second); err != nil || !ok || c.Epoch <= b.Epoch {
			t.Fatalf("after a release = %+v, %v, %v", c, ok, err)
		}
		if err := s.Alerting().PutAlertView(ctx, b, []byte(`{"released":true}`)); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("a fenced write under the released lease = %v; want ErrLeaseLost", err)
		}
	})
}

// The alert view written by the lease holder reaches every watcher, and
// a new watcher gets the current view at once.
func TestAlertViewReachesWatchers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := context.Background()
		var seen []string
		if err := s.Alerting().WatchAlertView(ctx, func(v []byte) { seen = append(seen, string(v)) }); err != nil {
			t.Fatal(err)
		}
		l := alertLease(t, s)
		if err := s.Alerting().PutAlertView(ctx, l, []byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[0] != "" || seen[1] != `{"n":1}` {
			t.Fatalf("watcher saw %q; want the empty view, then the new one", seen)
		}
		var late []string
		if err := s.Alerting().WatchAlertView(ctx, func(v []byte) { late = append(late, string(v)) }); err != nil {
			t.Fatal(err)
		}
		if len(late) != 1 || late[0] != `{"n":1}` {
			t.Fatalf("a new watcher saw %q; want the current view", late)
		}
	})
}
