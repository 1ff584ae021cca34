package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// raceRounds is how many times each race is run; each round starts every
// contender at once behind a barrier.
const raceRounds = 15

// TestRacesOnOneTokenHaveOneWinner rotates, deletes and uses the same
// token from many goroutines at once, round after round. One delete wins,
// at most one rotation wins (a delete first leaves nothing to rotate), the
// losers get not-found or conflict and nothing else, the name belongs to
// exactly the surviving token, and a reopened store agrees with what the
// running one answered (nothing half-written on disk).
func TestRacesOnOneTokenHaveOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		final := map[string]verifier.Result{} // every secret and what it verifies as at the end

		for round := range raceRounds {
			name := fmt.Sprintf("ci-%d", round)
			old, oldMeta, err := s.CreateToken(ctx, NewToken{User: "alice", Name: name, Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			var (
				start            = make(chan struct{})
				wg               sync.WaitGroup
				mu               sync.Mutex
				rotated          []string
				deletes          int
				verifiersRunning = make(chan struct{})
			)
			for i := range 4 {
				wg.Go(func() {
					<-start
					sec, _, err := s.RotateToken(ctx, "alice", oldMeta.ID, time.Duration(i%2)*time.Hour, t0.Add(2*time.Hour))
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						rotated = append(rotated, sec)
					} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
						t.Errorf("round %d: losing rotation got %v, want not found or conflict", round, err)
					}
				})
			}
			for range 2 {
				wg.Go(func() {
					<-start
					err := s.DeleteToken(ctx, "alice", oldMeta.ID)
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						deletes++
					} else if !errors.Is(err, ErrNotFound) {
						t.Errorf("round %d: losing delete got %v, want not found", round, err)
					}
				})
			}
			var vg sync.WaitGroup
			for range 2 {
				vg.Go(func() {
					<-start
					for {
						if id, r := s.Verify(old); r == verifier.ResultOK && (id.Username != "alice" || id.TokenID != oldMeta.ID) {
							t.Errorf("round %d: the old secret verified as %+v", round, id)
						} else if r != verifier.ResultOK && r != verifier.ResultRevoked && r != verifier.ResultUnknown {
							t.Errorf("round %d: the old secret verified as %v", round, r)
						}
						select {
						case <-verifiersRunning:
							return
						default:
						}
					}
				})
			}
			close(start)
			wg.Wait()
			close(verifiersRunning)
			vg.Wait()

			if deletes != 1 || len(rotated) > 1 {
				t.Fatalf("round %d: %d deletes and %d rotations won, want 1 and at most 1", round, deletes, len(rotated))
			}
			if _, r := s.Verify(old); r != verifier.ResultUnknown {
				t.Errorf("round %d: the deleted token verifies as %v", round, r)
			}
			final[old] = verifier.ResultUnknown
			toks, err := s.ListUserTokens(context.Background(), "alice")
			if err != nil {
				t.Fatal(err)
			}
			named := slices.DeleteFunc(toks, func(tk Token) bool { return tk.Name != name })
			_, _, dupErr := s.CreateToken(ctx, NewToken{User: "alice", Name: name, Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
			if len(rotated) == 1 {
				id, r := s.Verify(rotated[0])
				if r != verifier.ResultOK || len(named) != 1 || named[0].ID != id.TokenID || named[0].Status != StatusActive {
					t.Errorf("round %d: the rotation won but its token verifies as %v and the name lists %+v", round, r, named)
				}
				if !errors.Is(dupErr, ErrConflict) {
					t.Errorf("round %d: the rotated token's name was free again: %v", round, dupErr)
				}
				final[rotated[0]] = verifier.ResultOK
			} else if len(named) != 0 || dupErr != nil {
				t.Errorf("round %d: delete won alone, yet the name lists %+v and is not free (%v)", round, named, dupErr)
			}
		}
		wantSameAfterReopen(t, s, db, clock, final)
	})
}

// TestRacesOnOneUserEndConsistent creates tokens for, disables, logs in
// and deletes the same user from many goroutines at once. Whatever the
// order, the user ends deleted with no token, name or index entry left
// behind: the same username can be created again with the same token
// names, and none of the old secrets works, now or after a reopen.
func TestRacesOnOneUserEndConsistent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		final := map[string]verifier.Result{}

		for round := range raceRounds {
			user := fmt.Sprintf("bob-%d", round)
			if _, err := s.CreateUser(ctx, NewUser{Username: user, Password: "pw-bob"}); err != nil {
				t.Fatal(err)
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			var secrets []string
			for i := range 3 {
				wg.Go(func() {
					<-start
					sec, _, err := s.CreateToken(ctx, NewToken{User: user, Name: fmt.Sprintf("t%d", i), Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
					if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
						t.Errorf("round %d: creating a token during the races: %v", round, err)
					}
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						secrets = append(secrets, sec)
					}
				})
			}
			wg.Go(func() {
				<-start
				sec, _, err := s.CreateToken(ctx, NewToken{User: user, Kind: Temporary, ExpiresAt: t0.Add(time.Hour)})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					secrets = append(secrets, sec)
				}
			})
			wg.Go(func() {
				<-start
				if _, err := s.UpdateUser(ctx, user, UserPatch{Disabled: ptr(true)}); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("round %d: disabling during the races: %v", round, err)
				}
			})
			wg.Go(func() {
				<-start
				if _, err := s.CheckPassword(ctx, user, "pw-bob"); err != nil && !errors.Is(err, ErrBadLogin) {
					t.Errorf("round %d: logging in during the races: %v", round, err)
				}
			})
			wg.Go(func() {
				<-start
				if err := s.DeleteUser(ctx, user); err != nil {
					t.Errorf("round %d: deleting the user: %v", round, err)
				}
			})
			close(start)
			wg.Wait()

			for _, sec := range secrets {
				if _, r := s.Verify(sec); r != verifier.ResultUnknown {
					t.Errorf("round %d: a token of the deleted user verifies as %v", round, r)
				}
				final[sec] = verifier.ResultUnknown
			}
			all, err := s.ListTokens(context.Background(), TokenFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(all, func(tk Token) bool { return tk.User == user }) {
				t.Errorf("round %d: tokens of the deleted user are still listed", round)
			}
			// Nothing left behind: the same user and token names work again.
			if _, err := s.CreateUser(ctx, NewUser{Username: user, Password: "pw-bob-2"}); err != nil {
				t.Fatalf("round %d: re-creating the user: %v", round, err)
			}
			for i := range 3 {
				sec, _, err := s.CreateToken(ctx, NewToken{User: user, Name: fmt.Sprintf("t%d", i), Kind: Permanent, ExpiresAt: t0.Add(time.Hour)})
				if err != nil {
					t.Fatalf("round %d: token name t%d still taken after the user was deleted: %v", round, i, err)
				}
				final[sec] = verifier.ResultOK
			}
			if toks, _ := s.ListUserTokens(context.Background(), user); len(toks) != 3 {
				t.Errorf("round %d: the re-created user has %d tokens, want the 3 new ones", round, len(toks))
			}
		}
		wantSameAfterReopen(t, s, db, clock, final)
	})
}

// wantSameAfterReopen closes s and opens dir again: every secret verifies
// as it did at the end, and the token listing is the same, so the
// in-memory index never held anything the disk does not.
func wantSameAfterReopen(t *testing.T, s *Store, db *testDB, clock Clock, final map[string]verifier.Result) {
	t.Helper()
	for sec, want := range final {
		if _, r := s.Verify(sec); r != want {
			t.Errorf("before reopen a secret verifies as %v, want %v", r, want)
		}
	}
	list := func(s *Store) []Token {
		toks, err := s.ListTokens(context.Background(), TokenFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range toks {
			toks[i].LastUsedAt = nil
		}
		return toks
	}
	before := list(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := db.open(t, clock)
	for sec, want := range final {
		if _, got := r.Verify(sec); got != want {
			t.Errorf("after reopen a secret verifies as %v, want %v", got, want)
		}
	}
	b, _ := json.Marshal(before)
	a, _ := json.Marshal(list(r))
	if string(a) != string(b) {
		t.Errorf("token listing changed across a reopen:\nbefore %s\nafter  %s", b, a)
	}
}
