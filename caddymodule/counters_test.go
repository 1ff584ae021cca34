package caddymodule

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// Counts made on many goroutines, with garbage collections dropping the
// pool's loans in between, all add up; the stripes of dropped loans are
// given back and lent again, so they do not pile up collection after
// collection.
func TestDecisionCountersLoseNothingAcrossCollections(t *testing.T) {
	c := new(decisionCounters)
	const goroutines, perRound, rounds = 8, 1000, 5
	for range rounds {
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for i := range perRound {
					c.count(storage.ResultOK)
					if i%10 == 0 {
						c.count(storage.ResultMalformed)
					}
				}
			})
		}
		wg.Wait()
		// The pool drops its loans over two collections; their cleanups
		// then give every stripe back.
		runtime.GC()
		runtime.GC()
		waitAllGivenBack(t, c)
		c.mu.Lock()
		made := len(c.stripes)
		c.mu.Unlock()
		c.count(storage.ResultOK)
		c.mu.Lock()
		again := len(c.stripes)
		c.mu.Unlock()
		if again != made {
			t.Fatalf("a count after the collections made a new stripe (%d -> %d) instead of reusing a given-back one", made, again)
		}
	}
	if got, want := c.total(storage.ResultOK), uint64((goroutines*perRound+1)*rounds); got != want {
		t.Fatalf("ok counted %d; want %d", got, want)
	}
	if got, want := c.total(storage.ResultMalformed), uint64(goroutines*perRound/10*rounds); got != want {
		t.Fatalf("malformed counted %d; want %d", got, want)
	}
	c.count(storage.NumVerifyResults) // out of range: ignored, not a panic
}

// waitAllGivenBack waits for the cleanups of the dropped loans to run
// (they run after a collection, on a goroutine of their own).
func waitAllGivenBack(t *testing.T, c *decisionCounters) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		free, made := len(c.free), len(c.stripes)
		c.mu.Unlock()
		if free == made {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d stripes given back 5s after the pool dropped every loan", free, made)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkDecisionCount is the cost of counting a decision with every
// core counting at once, as under load.
func BenchmarkDecisionCount(b *testing.B) {
	c := new(decisionCounters)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.count(storage.ResultOK)
		}
	})
}
