package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
)

func TestAuditListing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("carol")
		empty, err := s.ListAudit(ctx, 10)
		if err != nil || empty == nil || len(empty) != 0 {
			t.Fatalf("empty ListAudit = %#v, %v", empty, err)
		}
		for range 1005 {
			clock.Advance(time.Millisecond)
			if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: "mallory"}); err != nil {
				t.Fatal(err)
			}
		}
		all, _ := s.ListAudit(ctx, 5000)
		if len(all) != 1000 {
			t.Fatalf("ListAudit(5000) returned %d; want the cap of 1000", len(all))
		}
		if !all[0].Time.Equal(clock.Now()) || !all[0].Time.After(all[1].Time) {
			t.Fatalf("not newest first: %v then %v", all[0].Time, all[1].Time)
		}
		if all[0].Actor != "carol" || all[0].ClientIP != "192.0.2.7" {
			t.Fatalf("actor from context not recorded: %+v", all[0])
		}
		if n, _ := s.ListAudit(ctx, 0); len(n) != 100 {
			t.Fatalf("ListAudit(0) returned %d; want the default 100", len(n))
		}
		if n, _ := s.ListAudit(ctx, 3); len(n) != 3 {
			t.Fatalf("ListAudit(3) returned %d", len(n))
		}
		err = s.AppendAudit(ctx, AuditEntry{})
		wantErr(t, err, ErrInvalid, "action")
		if e, _ := s.ListAudit(context.Background(), 1); e[0].Actor != "carol" {
			t.Fatal("an invalid audit entry was written")
		}
		// Without WithActor the actor is "system".
		s.AppendAudit(context.Background(), AuditEntry{Action: ActionLoginFailed})
		if e, _ := s.ListAudit(ctx, 1); e[0].Actor != "system" {
			t.Fatalf("actor = %q; want system", e[0].Actor)
		}
	})
}

func TestPruneAudit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		const batch = 20
		db.batchSize = batch
		s, clock := newTestStore(t, db)
		ctx := ctxAs("carol")
		// More entries than one pruning batch, a minute apart.
		entries := 3*batch + 7
		var times []time.Time
		for range entries {
			clock.Advance(time.Minute)
			if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: "mallory"}); err != nil {
				t.Fatal(err)
			}
			times = append(times, clock.Now())
		}
		keep := 50
		cutoff := times[entries-keep] // that entry and the newer ones stay

		n, err := s.PruneAudit(context.Background(), cutoff)
		if err != nil || n != entries-keep {
			t.Fatalf("PruneAudit = %d, %v; want %d deleted", n, err, entries-keep)
		}
		left, _ := s.ListAudit(ctx, 1000)
		if len(left) != keep+1 {
			t.Fatalf("%d entries left; want the %d newer than the cutoff and the prune record", len(left), keep)
		}
		record := left[0]
		if record.Action != ActionAuditPrune || record.Actor != "system" ||
			!strings.Contains(record.Detail, fmt.Sprintf("deleted %d entries", entries-keep)) {
			t.Fatalf("prune record = %+v", record)
		}
		if oldest := left[len(left)-1]; !oldest.Time.Equal(cutoff) {
			t.Fatalf("oldest entry left is from %v; want the one at the cutoff, %v", oldest.Time, cutoff)
		}

		// Nothing older is left: a second prune deletes nothing and says nothing.
		if n, err := s.PruneAudit(context.Background(), cutoff); err != nil || n != 0 {
			t.Fatalf("second PruneAudit = %d, %v; want 0", n, err)
		}
		if again, _ := s.ListAudit(ctx, 1000); len(again) != len(left) {
			t.Fatalf("a prune that deleted nothing changed the log: %d entries, had %d", len(again), len(left))
		}
	})
}

// Every audit entry names the token its actor acted with, so "what did
// this leaked token do" has an answer; the product's own entries and
// logins (a password, not a token) name none.
func TestAuditNamesTheActingToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := WithCaller(context.Background(), Actor{Name: "root", ClientIP: "192.0.2.7", TokenID: "tok_0123456789abcdef0123", TokenKind: Permanent})
		if _, err := s.CreateUser(ctx, NewUser{Username: "alice", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendAudit(ctx, AuditEntry{Action: ActionBackup}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateUser(ctxAs("cli"), NewUser{Username: "bob", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		entries, err := s.ListAudit(context.Background(), 10)
		if err != nil || len(entries) != 3 {
			t.Fatalf("ListAudit = %+v, %v", entries, err)
		}
		for _, e := range entries[1:] {
			if e.Actor != "root" || e.ActorTokenID != "tok_0123456789abcdef0123" || e.ActorTokenKind != Permanent || e.ClientIP != "192.0.2.7" {
				t.Errorf("entry %+v does not name root's token", e)
			}
		}
		if e := entries[0]; e.ActorTokenID != "" || e.ActorTokenKind != "" {
			t.Errorf("entry by the cli names a token: %+v", e)
		}
		b, _ := json.Marshal(entries[1])
		if !strings.Contains(string(b), `"actor_token_id":"tok_0123456789abcdef0123","actor_token_kind":"permanent"`) {
			t.Errorf("JSON %s", b)
		}
		if b, _ := json.Marshal(entries[0]); strings.Contains(string(b), "actor_token") {
			t.Errorf("JSON of an entry without a token: %s", b)
		}
	})
}
