package storage_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
)

// tryLogin begins an attempt and ends it with outcome at once if it was
// let through; it returns the wait Begin asked for (0: let through).
func tryLogin(t testing.TB, s *Store, user, ip string, outcome throttle.Outcome) time.Duration {
	t.Helper()
	a, wait, err := s.Logins().Begin(context.Background(), user, ip, throttle.Policy{})
	if err != nil {
		t.Fatalf("Begin(%q, %q): %v", user, ip, err)
	}
	if wait > 0 {
		return wait
	}
	if err := s.Logins().End(context.Background(), a, outcome); err != nil {
		t.Fatalf("End(%q, %q): %v", user, ip, err)
	}
	return 0
}

func mustPass(t testing.TB, s *Store, user, ip string, outcome throttle.Outcome) {
	t.Helper()
	if wait := tryLogin(t, s, user, ip, outcome); wait != 0 {
		t.Fatalf("login of %s from %s refused for %v; want it let through", user, ip, wait)
	}
}

func mustWait(t testing.TB, s *Store, user, ip string, want time.Duration) {
	t.Helper()
	if wait := tryLogin(t, s, user, ip, throttle.Succeeded); wait != want {
		t.Fatalf("login of %s from %s: wait %v; want %v", user, ip, wait, want)
	}
}

// One source guessing one user's password is stopped after 5 failures
// for the rest of the 15-minute window, even with the right password.
func TestLoginThrottlePerPair(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		for range 5 {
			mustPass(t, s, "alice", "198.51.100.1", throttle.Failed)
			clock.Advance(time.Minute)
		}
		mustWait(t, s, "alice", "198.51.100.1", 10*time.Minute)
		clock.Advance(10 * time.Minute)
		mustPass(t, s, "alice", "198.51.100.1", throttle.Succeeded)
		// A success clears the pair: five more tries before the next block.
		for range 5 {
			mustPass(t, s, "alice", "198.51.100.1", throttle.Failed)
		}
		mustWait(t, s, "alice", "198.51.100.1", 15*time.Minute)
	})
}

// One address spraying passwords over many usernames is stopped after 20
// failures; the same users from elsewhere are not.
func TestLoginThrottlePerAddress(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		for i := range 20 {
			mustPass(t, s, fmt.Sprintf("user%d", i), "203.0.113.9", throttle.Failed)
		}
		clock.Advance(time.Minute)
		mustWait(t, s, "someone-else", "203.0.113.9", 14*time.Minute)
		// Strings that are not usernames count against the address only.
		mustWait(t, s, "Not A Username", "203.0.113.9", 14*time.Minute)
		mustPass(t, s, "user1", "203.0.113.10", throttle.Succeeded)
	})
}

// Many addresses guessing one user's password meet a backoff that grows
// to 5 minutes, never a lockout; the user, from an address that logged in
// before, gets in at once all the while.
func TestLoginThrottlePerUserBackoff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		home := "192.0.2.10"
		mustPass(t, s, "alice", home, throttle.Succeeded) // her usual address
		attacker := 0
		next := func() string { attacker++; return fmt.Sprintf("10.%d.%d.1", attacker/250, attacker%250) }
		for range 5 {
			mustPass(t, s, "alice", next(), throttle.Failed)
		}
		for i, want := range []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300} {
			want *= time.Second
			mustWait(t, s, "alice", next(), want)
			mustPass(t, s, "alice", home, throttle.Succeeded) // never blocked at home
			clock.Advance(want - time.Millisecond)
			if wait := tryLogin(t, s, "alice", next(), throttle.Failed); wait != time.Second {
				t.Fatalf("step %d: a millisecond early, wait %v; want the 1s minimum", i, wait)
			}
			clock.Advance(time.Millisecond)
			mustPass(t, s, "alice", next(), throttle.Failed)
		}
		// The user from a new address waits like anyone else: the honest
		// limit of the design.
		mustWait(t, s, "alice", "192.0.2.99", 300*time.Second)
		// 15 quiet minutes and the count is gone.
		clock.Advance(15 * time.Minute)
		mustPass(t, s, "alice", "192.0.2.99", throttle.Succeeded)
		// The trust of an address lasts 30 days from its last success.
		mustPass(t, s, "alice", home, throttle.Succeeded)
		clock.Advance(30*24*time.Hour - time.Minute)
		for range 5 {
			mustPass(t, s, "alice", next(), throttle.Failed)
		}
		mustPass(t, s, "alice", home, throttle.Failed) // trusted for one more minute
		clock.Advance(2 * time.Minute)
		mustPass(t, s, "alice", next(), throttle.Failed)
		mustWait(t, s, "alice", home, 2*time.Second) // no longer trusted
	})
}

// An attacker with unlimited addresses guesses no faster than the old
// hard lockout allowed (5 per 15 minutes, 20 an hour) over any day: at
// most 15 in the first quarter hour, then one every 5 minutes.
func TestLoginThrottleKeepsGuessingSlow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		start := clock.Now()
		guesses := map[time.Duration]int{} // per elapsed hour
		for n := 0; clock.Now().Sub(start) < 3*time.Hour; n++ {
			ip := fmt.Sprintf("10.%d.%d.%d", n/65536%256, n/256%256, n%256)
			if wait := tryLogin(t, s, "alice", ip, throttle.Failed); wait > 0 {
				clock.Advance(wait)
				continue
			}
			guesses[clock.Now().Sub(start).Truncate(time.Hour)]++
		}
		t.Logf("guesses per hour: %v", guesses)
		if g := guesses[0]; g > 25 {
			t.Errorf("%d guesses in the first hour; want at most 25", g)
		}
		for h := time.Hour; h < 3*time.Hour; h += time.Hour {
			if g := guesses[h]; g > 12 {
				t.Errorf("%d guesses in hour %v; want at most 12", g, h)
			}
		}
	})
}

// Parallel guesses are counted before their passwords are checked, so
// they cannot all pass before the first failure is recorded; an attempt
// whose password could not be checked is taken back.
func TestLoginThrottleCountsAttemptsInAdvance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := context.Background()
		var mu sync.Mutex
		var passed []throttle.Attempt
		refused := 0
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				a, wait, err := s.Logins().Begin(ctx, "alice", "198.51.100.7", throttle.Policy{})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("Begin: %v", err)
				case wait > 0:
					refused++
				default:
					passed = append(passed, a)
				}
			})
		}
		wg.Wait()
		if len(passed) != 5 || refused != 7 {
			t.Fatalf("12 parallel attempts: %d let through, %d refused; want 5 and 7", len(passed), refused)
		}
		for _, a := range passed {
			if err := s.Logins().End(ctx, a, throttle.Unchecked); err != nil {
				t.Fatal(err)
			}
		}
		for range 20 { // none of them counted
			mustPass(t, s, "alice", "198.51.100.7", throttle.Unchecked)
		}
		mustPass(t, s, "alice", "198.51.100.7", throttle.Succeeded)
	})
}

// Every node of a fleet counts the same failures, and a restart forgets
// none of them.
func TestLoginThrottleIsShared(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		a := db.open(t, clock)
		nodes := []*Store{a}
		if db.Kind == "postgres" {
			nodes = append(nodes, db.open(t, clock), db.open(t, clock))
		}
		for i := range 5 {
			mustPass(t, nodes[i%len(nodes)], "alice", "198.51.100.1", throttle.Failed)
		}
		for _, n := range nodes {
			mustWait(t, n, "alice", "198.51.100.1", 15*time.Minute)
		}
		for _, n := range nodes {
			n.Close()
		}
		b := db.open(t, clock)
		mustWait(t, b, "alice", "198.51.100.1", 15*time.Minute)
	})
}

// The throttle stores no string that is not a username, and a long
// address never becomes a long key.
func TestLoginThrottleKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		pasted := "Hunter2 my password"
		longIP := strings.Repeat("f", 5000)
		mustPass(t, s, pasted, "192.0.2.1", throttle.Failed)
		mustPass(t, s, "alice", longIP, throttle.Succeeded)
		mustPass(t, s, "alice", longIP, throttle.Failed)
		mustPass(t, s, pasted, "192.0.2.1", throttle.Failed)
		var keys []string
		rawView(t, s, func(r kv.Reader) error {
			return r.Scan("lt/", kv.ScanOptions{KeysOnly: true}, func(k, _ []byte) error {
				keys = append(keys, string(k))
				return nil
			})
		})
		hashed := false
		for _, k := range keys {
			if strings.Contains(k, "Hunter2") || len(k) > 100 {
				t.Errorf("throttle key %q", k)
			}
			hashed = hashed || strings.HasPrefix(k, "lt/t/alice/#")
		}
		if !hashed {
			t.Errorf("throttle keys %q: no trusted pair for alice at the hashed long address", keys)
		}
	})
}

// A node refuses what it has already been refused by the database without
// asking it again: once an address is blocked, its attempts are refused
// even with the database closed, for exactly the wait it read, and then
// the database decides again.
func TestLoginThrottleRemembersRefusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		for i := range 20 {
			mustPass(t, s, fmt.Sprintf("user%d", i), "203.0.113.9", throttle.Failed)
		}
		mustWait(t, s, "user0", "203.0.113.9", 15*time.Minute) // read from the database
		logins := s.Logins()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		clock.Advance(5 * time.Minute)
		for _, user := range []string{"user0", "someone-else", ""} {
			_, wait, err := logins.Begin(context.Background(), user, "203.0.113.9", throttle.Policy{})
			if err != nil || wait != 10*time.Minute {
				t.Errorf("Begin(%q) from the blocked address with the database closed: wait %v, %v; want 10m from memory", user, wait, err)
			}
		}
		clock.Advance(10 * time.Minute)
		if _, _, err := logins.Begin(context.Background(), "user0", "203.0.113.9", throttle.Policy{}); err == nil {
			t.Error("Begin after the remembered wait ran out did not ask the (closed) database")
		}
		if _, _, err := logins.Begin(context.Background(), "user0", "203.0.113.10", throttle.Policy{}); err == nil {
			t.Error("Begin from another address was answered without the (closed) database")
		}
	})
}

// IPv6 addresses count per /64 by default, since whoever holds one address
// of a /64 usually holds all of it; the prefix lengths are the operator's.
func TestLoginThrottleGroupsAddressesByPrefix(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := context.Background()
		try := func(user, ip string, p throttle.Policy) time.Duration {
			t.Helper()
			a, wait, err := s.Logins().Begin(ctx, user, ip, p)
			if err != nil {
				t.Fatal(err)
			}
			if wait == 0 {
				if err := s.Logins().End(ctx, a, throttle.Failed); err != nil {
					t.Fatal(err)
				}
			}
			return wait
		}
		for i := range 20 {
			if wait := try(fmt.Sprintf("user%d", i), fmt.Sprintf("2001:db8:1:2::%x", i+1), throttle.Policy{}); wait != 0 {
				t.Fatalf("failure %d from its own address of the /64: wait %v", i+1, wait)
			}
		}
		if try("user0", "2001:db8:1:2:ffff::1", throttle.Policy{}) == 0 {
			t.Error("a 21st address of the same /64 was let through")
		}
		if wait := try("user0", "2001:db8:1:3::1", throttle.Policy{}); wait != 0 {
			t.Errorf("the next /64 was refused for %v", wait)
		}
		// Per address, as the operator may set: each /128 counts alone.
		if wait := try("user1", "2001:db8:1:2:ffff::2", throttle.Policy{IPv6Prefix: 128}); wait != 0 {
			t.Errorf("with IPv6Prefix 128, a new address of the /64 was refused for %v", wait)
		}
		// IPv4 by /24 when asked; by default each address alone.
		for i := range 20 {
			try(fmt.Sprintf("user%d", i), fmt.Sprintf("198.51.100.%d", i+1), throttle.Policy{IPv4Prefix: 24})
		}
		if try("user0", "198.51.100.200", throttle.Policy{IPv4Prefix: 24}) == 0 {
			t.Error("with IPv4Prefix 24, a 21st address of the /24 was let through")
		}
		if wait := try("user0", "198.51.100.200", throttle.Policy{}); wait != 0 {
			t.Errorf("with the default policy, an address of a blocked /24 was refused for %v", wait)
		}
		// An IPv4 address written as IPv6 is the same address.
		if try("user0", "::ffff:198.51.100.200", throttle.Policy{IPv4Prefix: 24}) == 0 {
			t.Error("an IPv4-mapped IPv6 address escaped its /24")
		}
	})
}
