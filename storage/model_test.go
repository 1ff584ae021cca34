package storage_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// TestIndexAgreesWithDisk applies a random mix of mutations and clock moves
// and, after each one, checks that what Verify answers from memory for
// every secret ever issued matches what the records on disk say, and that
// CountTokens matches the listing. At the end it reopens the store: the
// index rebuilt from disk must answer exactly like the one kept up to date
// by the write path.
func TestIndexAgreesWithDisk(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		rng := rand.New(rand.NewPCG(1, 2))
		users := []string{"root", "u1", "u2", "u3"}
		mustCreateUser(t, s, "root", true)
		for _, u := range users[1:] {
			mustCreateUser(t, s, u, false)
		}
		secrets := map[string]string{} // secret -> token id
		var ids []string               // in creation order, so the walk is reproducible
		// pick returns a random existing token and, usually, its owner (else a
		// random user, to exercise "not your token").
		pick := func(user string) (string, string) {
			for range 10 {
				id := ids[rng.IntN(len(ids))]
				if tk, err := s.GetToken(ctx, id); err == nil {
					if rng.IntN(4) != 0 {
						user = tk.User
					}
					return id, user
				}
			}
			return "tok_none", user
		}
		succeeded := map[int]int{}
		seen := map[verifier.Result]int{}
		for step := range 300 {
			user := users[1+rng.IntN(len(users)-1)]
			var err error
			op := rng.IntN(8)
			switch op {
			case 0, 1:
				kind := Permanent
				if op == 1 {
					kind = Temporary
				}
				var sec string
				var meta Token
				sec, meta, err = s.CreateToken(ctx, NewToken{User: user, Name: fmt.Sprintf("n%d", rng.IntN(6)), Kind: kind,
					ExpiresAt: clock.Now().Add(time.Duration(1+rng.IntN(48)) * time.Hour)})
				if err == nil {
					secrets[sec] = meta.ID
					ids = append(ids, meta.ID)
				}
			case 2:
				if len(ids) == 0 {
					continue
				}
				id, owner := pick(user)
				err = s.DeleteToken(ctx, owner, id)
			case 3:
				if len(ids) == 0 {
					continue
				}
				id, owner := pick(user)
				user = owner
				var sec string
				var meta Token
				sec, meta, err = s.RotateToken(ctx, user, id, time.Duration(rng.IntN(3))*time.Hour, clock.Now().Add(24*time.Hour))
				if err == nil {
					secrets[sec] = meta.ID
					ids = append(ids, meta.ID)
				}
			case 4:
				_, err = s.UpdateUser(ctx, user, UserPatch{Disabled: ptr(rng.IntN(2) == 0)})
			case 5:
				_, err = s.UpdateUser(ctx, user, UserPatch{Admin: ptr(rng.IntN(2) == 0)})
			case 6:
				clock.Advance(time.Duration(rng.IntN(6)) * time.Hour)
			case 7:
				if rng.IntN(3) != 0 {
					continue // deleting users is rarer, so users keep some tokens
				}
				if err = s.DeleteUser(ctx, user); err == nil {
					mustCreateUser(t, s, user, false)
				}
			}
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("step %d: %v", step, err)
			}
			if err == nil {
				succeeded[op]++
			}
			for r, n := range checkIndexAgainstDisk(t, s, secrets, fmt.Sprintf("step %d", step)) {
				seen[r] += n
			}
		}
		// Make sure the walk did exercise every kind of change and outcome.
		for op := range 8 {
			if succeeded[op] < 3 {
				t.Fatalf("operation %d succeeded only %d times; the walk proves little", op, succeeded[op])
			}
		}
		for _, r := range []verifier.Result{verifier.ResultOK, verifier.ResultUnknown, verifier.ResultExpired, verifier.ResultRevoked, verifier.ResultDisabled} {
			if seen[r] == 0 {
				t.Fatalf("the walk never saw Verify answer %v", r)
			}
		}
		s.Close()
		s = db.open(t, clock)
		checkIndexAgainstDisk(t, s, secrets, "after reopen")
	})
}

func checkIndexAgainstDisk(t *testing.T, s *Store, secrets map[string]string, when string) (seen map[verifier.Result]int) {
	t.Helper()
	ctx := context.Background()
	now := s.Clock().Now()
	seen = map[verifier.Result]int{}
	for sec, id := range secrets {
		got, r := s.Verify(sec)
		seen[r]++
		want := verifier.ResultUnknown
		var admin bool
		if tk, err := s.GetToken(ctx, id); err == nil {
			u, err := s.GetUser(ctx, tk.User)
			if err != nil {
				t.Fatalf("%s: token %s of missing user %s", when, id, tk.User)
			}
			admin = u.Admin
			switch {
			case tk.StatusAt(now) == StatusRevoked:
				want = verifier.ResultRevoked
			case tk.StatusAt(now) == StatusExpired:
				want = verifier.ResultExpired
			case u.Disabled:
				want = verifier.ResultDisabled
			default:
				want = verifier.ResultOK
			}
		} else if !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		if r == verifier.ResultExpired && want == verifier.ResultUnknown {
			// A temporary token past its expiry is gone from the disk's
			// point of view; memory may still call it expired until swept.
			continue
		}
		if r != want || (r == verifier.ResultOK && (got.TokenID != id || got.Admin != admin)) {
			t.Fatalf("%s: Verify(token %s) = %v %+v; disk says %v (admin %v)", when, id, r, got, want, admin)
		}
	}
	all, err := s.ListTokens(ctx, TokenFilter{})
	if err != nil {
		t.Fatal(err)
	}
	active := map[TokenKind]int{}
	for _, tk := range all {
		if tk.Status == StatusActive {
			active[tk.Kind]++
		}
	}
	if n := s.Alerting().CountTokens(); n[Permanent] != active[Permanent] || n[Temporary] != active[Temporary] {
		t.Fatalf("%s: CountTokens = %v; listing has %v active", when, n, active)
	}
	checkExpiryCopies(t, s, when)
	return seen
}
