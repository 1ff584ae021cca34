package storage_test

import (
	"context"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
)

func TestAlertStates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		_, tk, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if _, found, err := s.GetAlertState(ctx, tk.ID); found || err != nil {
			t.Fatalf("GetAlertState before any = %v, %v", found, err)
		}
		st := AlertState{NotifiedDays: 7, RaisedAt: t0}
		if err := s.Alerting().PutAlertStates(ctx, alertLease(t, s), map[string]AlertState{tk.ID: st, "tok_gone": {NotifiedDays: 1}}); err != nil {
			t.Fatal(err)
		}
		got, found, err := s.GetAlertState(ctx, tk.ID)
		if err != nil || !found || got.NotifiedDays != 7 || !got.RaisedAt.Equal(t0) {
			t.Fatalf("GetAlertState = %+v, %v, %v", got, found, err)
		}
		if _, found, _ := s.GetAlertState(ctx, "tok_gone"); found {
			t.Fatal("alert state stored for a token that does not exist")
		}
		if err := s.DeleteToken(ctx, "alice", tk.ID); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := s.GetAlertState(ctx, tk.ID); found {
			t.Fatal("alert state outlived its token")
		}
	})
}
