package storage_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
)

// TestCheckPasswordSameWorkForUnknownUsers checks that a login for a
// username that does not exist, or for a disabled user, costs a full
// bcrypt comparison like a wrong password for a real user, so response
// time is no oracle for which usernames exist. It compares medians with a
// factor-of-three margin at the production cost: skipping the hash would be
// thousands of times faster, so the margin absorbs a busy machine without
// letting the oracle through.
func TestCheckPasswordSameWorkForUnknownUsers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		if testing.Short() {
			t.Skip("hashes at the production bcrypt cost")
		}
		s := db.openWith(t, Options{Clock: testtools.NewFakeClock(t0), PasswordCost: bcrypt.DefaultCost})
		ctx := context.Background()
		for _, name := range []string{"alice", "dora"} {
			if _, err := s.CreateUser(ctx, NewUser{Username: name, Password: "pw-" + name}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.UpdateUser(ctx, "dora", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		cases := []struct{ name, user, password string }{
			{"known user, wrong password", "alice", "wrong"},
			{"unknown user", "nobody", "wrong"},
			{"disabled user, right password", "dora", "pw-dora"},
			{"disabled user, wrong password", "dora", "wrong"},
		}
		if _, err := s.CheckPassword(ctx, "nobody", "x"); err == nil { // makes the dummy hash, once per store
			t.Fatal("unknown user logged in")
		}
		// Rounds interleave the cases so that load from other processes hits
		// them alike.
		times := make([][]time.Duration, len(cases))
		for range 5 {
			for i, c := range cases {
				start := time.Now()
				if _, err := s.CheckPassword(ctx, c.user, c.password); err == nil {
					t.Fatalf("%s: CheckPassword succeeded", c.name)
				}
				times[i] = append(times[i], time.Since(start))
			}
		}
		median := func(d []time.Duration) time.Duration {
			slices.Sort(d)
			return d[len(d)/2]
		}
		known := median(times[0])
		for i, c := range cases[1:] {
			got := median(times[i+1])
			if ratio := float64(got) / float64(known); ratio < 1.0/3 || ratio > 3 {
				t.Errorf("%s: median %v vs %v for a known user's wrong password (ratio %.3f); want the same work", c.name, got, known, ratio)
			}
		}
	})
}
