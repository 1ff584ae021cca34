package pgstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// A flood of forged tokens, well-formed with a valid checksum but of no
// user, costs the database a bounded number of catch-ups: single-flight,
// rate-limited and negatively cached, whatever the flood's size.
func TestForgedTokensCostBoundedCatchUps(t *testing.T) {
	b, err := Open(context.Background(), testtools.PostgresDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(context.Background(), b, storage.Options{PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	polls := func() uint64 {
		b.feed.mu.Lock()
		defer b.feed.mu.Unlock()
		return b.feed.started
	}
	forged := make([]string, 200)
	for i := range forged {
		forged[i] = secret.New(storage.Permanent) // valid checksum, in no database
	}
	before, start := polls(), time.Now()
	for round := range 5 {
		// All at once, as a flood comes: the misses beyond the rate wait
		// together for the feed's next read.
		var wg sync.WaitGroup
		for _, sec := range forged {
			wg.Go(func() {
				if _, r := s.Verifier().Verify(sec, nil); r != verifier.ResultUnknown {
					t.Errorf("round %d: a forged token verifies as %v", round, r)
				}
			})
		}
		wg.Wait()
	}
	elapsed := time.Since(start)
	// The background poll runs every 200ms besides; the catch-ups are at
	// most the burst plus the rate over the time the flood took.
	limit := uint64(20 + 20*elapsed.Seconds() + elapsed.Seconds()/0.2 + 2)
	if got := polls() - before; got > limit {
		t.Fatalf("1000 forged tokens in %s caused %d polls; want at most %d", elapsed, got, limit)
	}
	t.Logf("1000 forged tokens in %s caused %d polls", elapsed, polls()-before)
}
