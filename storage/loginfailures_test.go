package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Failed logins cost the audit log one entry per user, address and
// window, with a count; a username that does not exist costs nothing.
func TestLoginFailuresAreAggregated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		before := auditCount(t, s)
		fail := func(user, ip string) bool {
			t.Helper()
			known, err := s.RecordLoginFailure(ctx, AuditEntry{Actor: user, Action: ActionLoginFailed, Target: user, ClientIP: ip, Detail: "wrong password"}, 15*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			return known
		}
		for i := range 50 {
			if fail(fmt.Sprintf("nobody%d", i), fmt.Sprintf("192.0.2.%d", i)) {
				t.Fatal("a username that does not exist was taken for a user")
			}
		}
		if fail("Not A Username", "192.0.2.1") {
			t.Fatal("a string that is not a username was taken for a user")
		}
		if n := auditCount(t, s); n != before {
			t.Fatalf("failures for unknown usernames added %d audit entries; want none", n-before)
		}
		for range 7 {
			if !fail("alice", "192.0.2.1") {
				t.Fatal("alice was not taken for a user")
			}
			clock.Advance(time.Minute)
		}
		fail("alice", "192.0.2.2")
		entries, _ := s.ListAudit(ctx, 10)
		counts := map[string]int{}
		for _, e := range entries {
			if e.Action == ActionLoginFailed {
				counts[e.ClientIP] += max(e.Count, 1)
			}
		}
		if n := auditCount(t, s) - before; n != 2 || counts["192.0.2.1"] != 7 || counts["192.0.2.2"] != 1 {
			t.Fatalf("8 failures of alice from 2 addresses: %d entries, counts %v; want 2 entries counting 7 and 1", n, counts)
		}
		// The next window starts a new entry.
		clock.Advance(15 * time.Minute)
		fail("alice", "192.0.2.1")
		if n := auditCount(t, s) - before; n != 3 {
			t.Fatalf("a failure in the next window: %d entries; want 3", n)
		}
	})
}

func auditCount(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := s.ListAudit(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// A login past max_sessions ends the user's oldest sessions, audited,
// and only hers.
func TestSessionsPerUserAreCapped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		login := func(user string) (string, string) {
			t.Helper()
			clock.Advance(time.Second)
			sec, tok, err := s.CreateToken(ctx, NewToken{User: user, Kind: Temporary, ExpiresAt: clock.Now().Add(time.Hour), MaxSessions: 3})
			if err != nil {
				t.Fatal(err)
			}
			return sec, tok.ID
		}
		bobs, _ := login("bob")
		var secrets, ids []string
		for range 5 {
			sec, id := login("alice")
			secrets, ids = append(secrets, sec), append(ids, id)
		}
		for i, sec := range secrets {
			_, res := s.Verify(sec)
			if ok := res == verifier.ResultOK; ok != (i >= 2) {
				t.Errorf("alice's session %d of 5 with a cap of 3: %v", i+1, res)
			}
		}
		if _, res := s.Verify(bobs); res != verifier.ResultOK {
			t.Errorf("bob's one session: %v", res)
		}
		ended := map[string]bool{}
		entries, _ := s.ListAudit(ctx, 100)
		for _, e := range entries {
			if e.Action == ActionSessionEnded {
				ended[e.Target] = true
			}
		}
		if len(ended) != 2 || !ended[ids[0]] || !ended[ids[1]] {
			t.Errorf("session_ended entries for %v; want alice's first two, %v", ended, ids[:2])
		}
	})
}
