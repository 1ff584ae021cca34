package storage_test

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Benchmarks of start-up, of a durable mutation and of the alert walk, on
// every backend. The 1M cases only run when -bench selects them, e.g.
//
//	go test -run '^$' -bench 'BenchmarkOpen1M' -benchtime 3x ./storage
//	go test -run '^$' -bench 'BenchmarkForEachPermanentToken/.*/1M' -benchtime 3x ./storage

// forEachBackendB is forEachBackend for benchmarks.
func forEachBackendB(b *testing.B, fn func(b *testing.B, db *testDB)) {
	for _, kind := range backends {
		b.Run(kind, func(b *testing.B) { fn(b, newTestDB(b, kind)) })
	}
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkOpen1M measures opening a store whose database holds a million
// token records: the time to stream them into the index (on PostgreSQL,
// over the connection), and the CPU this process spends on it.
func BenchmarkOpen1M(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, db *testDB) {
		const n = 1_000_000
		clock := testtools.NewFakeClock(t0)
		s := db.open(b, clock)
		mustCreateUser(b, s, "bench", false)
		const chunk = 10_000 // raw keys per transaction, inside Badger's limit
		for i := 0; i < n; i += chunk {
			rawUpdate(b, s, func(w kv.Writer) error {
				for j := i; j < min(i+chunk, n); j++ {
					key, val := SyntheticRecord("bench", j, t0, t0.Add(365*24*time.Hour))
					if err := w.Set(key, val, 0); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		var cpu float64
		for b.Loop() {
			cpuBefore := cpuSeconds()
			s := db.open(b, clock)
			cpu += cpuSeconds() - cpuBefore
			b.StopTimer()
			if got := s.Alerting().CountTokens()[Permanent]; got != n {
				b.Fatalf("loaded %d tokens; want %d", got, n)
			}
			s.Close()
			b.StartTimer()
		}
		// CPU time is steadier than wall time on a shared machine.
		b.ReportMetric(cpu/float64(b.N), "cpu-s/op")
	})
}

// BenchmarkCreateToken measures one durable mutation: a token, its index
// keys and its audit entry in one committed transaction.
func BenchmarkCreateToken(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, db *testDB) {
		s := db.open(b, SystemClock{})
		mustCreateUser(b, s, "bench", false)
		exp := time.Now().Add(24 * time.Hour)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := s.CreateToken(ctxAs("root"), NewToken{User: "bench", Name: fmt.Sprintf("t%d", i), Kind: Permanent, ExpiresAt: exp}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// benchSelects reports whether the -bench pattern names what, so that
// sub-benchmarks that seed a million tokens run only when asked for.
func benchSelects(what string) bool {
	f := flag.Lookup("test.bench")
	return f != nil && strings.Contains(f.Value.String(), what)
}

// BenchmarkForEachPermanentToken measures one walk of every permanent
// token, as the alert loop does once per pass, over a store written by the
// real write path and reopened (so on Badger the data sits in tables, not
// in the memtable).
func BenchmarkForEachPermanentToken(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, db *testDB) {
		for _, size := range []struct {
			name string
			n    int
		}{{"100k", 100_000}, {"1M", 1_000_000}} {
			b.Run(size.name, func(b *testing.B) {
				if size.n > 100_000 && !benchSelects(size.name) {
					b.Skipf("seeds %d tokens; select it with -bench 'ForEachPermanentToken/.*/%s'", size.n, size.name)
				}
				db := newTestDB(b, db.Kind)
				clock := testtools.NewFakeClock(t0)
				s := db.open(b, clock)
				mustCreateUser(b, s, "bench", false)
				createUserTokens(b, s, clock.Now(), "bench", size.n)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				s = db.open(b, clock)
				ctx := context.Background()
				b.ReportAllocs()
				cpu := cpuSeconds()
				for b.Loop() {
					n := 0
					var last time.Time
					err := s.Alerting().ForEachPermanentToken(ctx, func(t Token) error {
						if t.ExpiresAt.Before(last) {
							return fmt.Errorf("token %s out of order", t.ID)
						}
						last = t.ExpiresAt
						n++
						return nil
					})
					if err != nil || n != size.n {
						b.Fatalf("walked %d tokens (%v); want %d", n, err, size.n)
					}
				}
				// CPU time is steadier than wall time on a shared machine.
				b.ReportMetric((cpuSeconds()-cpu)/float64(b.N), "cpu-s/op")
			})
		}
	})
}
