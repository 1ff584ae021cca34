package alerts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// benchTokens is the store size of BenchmarkAlertPass; override it with
// ALERTS_BENCH_TOKENS for a quicker look.
func benchTokens(b *testing.B) int {
	n := 1_000_000
	if s := os.Getenv("ALERTS_BENCH_TOKENS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("ALERTS_BENCH_TOKENS=%q is not a positive number", s)
		}
	}
	return n
}

const (
	benchUsers = 1000
	// benchStart is when the seeded tokens were created; their expiries
	// are spread evenly over the following year.
	benchDays = "30;7;1"
)

var benchStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// seededStore returns a Badger directory holding n permanent tokens, with
// expiries spread evenly over a year, for benchUsers users. Storage has no
// bulk-load path, so it is seeded once through CreateToken and kept, on
// tmpfs where there is one, across benchmark runs; a marker file says it is
// complete. Seeding a million tokens takes about a quarter of an hour.
func seededStore(b *testing.B, n int) string {
	b.Helper()
	base := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm" // tmpfs: the fsync of each CreateToken costs nothing
	}
	dir := filepath.Join(base, fmt.Sprintf("caddy-api-tokens-alerts-bench-%d", n))
	marker := filepath.Join(dir, "SEEDED")
	if _, err := os.Stat(marker); err == nil {
		return dir
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeding %d permanent tokens into %s (once; later runs reuse it)", n, dir)
	started := time.Now()
	clock := storage.NewFakeClock(benchStart)
	st, err := storage.OpenBadger(dir, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for u := range benchUsers {
		if _, err := st.CreateUser(ctx, storage.NewUser{Username: fmt.Sprintf("user%04d", u), Email: "u@example.com", Password: "bench-password"}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				expires := benchStart.Add(time.Hour + time.Duration(i)*(year/time.Duration(n)))
				_, _, err := st.CreateToken(ctx, storage.NewToken{User: fmt.Sprintf("user%04d", i%benchUsers),
					Name: fmt.Sprintf("token-%07d", i), Kind: storage.Permanent, ExpiresAt: expires, CreatedBy: "bench"})
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	if _, err := st.PutSetting(ctx, storage.SettingNotificationDays, benchDays); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded in %s", time.Since(started).Round(time.Second))
	return dir
}

// BenchmarkAlertPass measures one alert pass over a store of a million
// permanent tokens (ALERTS_BENCH_TOKENS), all active, with expiries spread
// over a year and thresholds 30;7;1: about 8% of them are faults. It
// reports the time per pass and the pass's
// peak heap above the opened store (runtime.MemStats, sampled), and the
// heap the published snapshot keeps between passes. No email is sent (no
// recipients are set), so the figure is the scan, faults and metrics.
func BenchmarkAlertPass(b *testing.B) {
	n := benchTokens(b)
	dir := seededStore(b, n)
	clock := storage.NewFakeClock(benchStart.Add(time.Minute))
	st, err := storage.OpenBadger(dir, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	loop := NewLoop(Config{Store: st, Clock: clock, Interval: time.Hour, Shared: NewShared()})
	if err := loop.RunOnce(ctx); err != nil { // records first-raised times once
		b.Fatal(err)
	}
	loop = NewLoop(Config{Store: st, Clock: clock, Interval: time.Hour, Shared: NewShared()})
	base := heapAfterGC()

	sampler := startHeapSampler()
	b.ResetTimer()
	for b.Loop() {
		if err := loop.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	peak := sampler.stop()
	retained := heapAfterGC()
	runtime.KeepAlive(loop)

	snap := loop.cfg.Shared.current()
	b.ReportMetric(float64(n), "tokens")
	b.ReportMetric(float64(len(snap.faults)), "faults")
	b.ReportMetric(float64(snap.expiry.len()), "active")
	b.ReportMetric(float64(peak-base)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(int64(retained)-int64(base))/(1<<20), "snapshot-MiB")
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heapSampler records the highest HeapAlloc seen while it runs.
type heapSampler struct {
	stopc chan struct{}
	done  chan uint64
}

func startHeapSampler() *heapSampler {
	s := &heapSampler{stopc: make(chan struct{}), done: make(chan uint64)}
	go func() {
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-s.stopc:
				s.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) stop() uint64 {
	close(s.stopc)
	return <-s.done
}

// BenchmarkCollectorScrape measures one scrape of the collector with
// 100,000 active permanent tokens in the snapshot: the cost /metrics pays
// for the per-token expiry series.
func BenchmarkCollectorScrape(b *testing.B) {
	const n = 100_000
	table := &expiryTable{}
	for i := range n {
		table.add(fmt.Sprintf("user%04d", i%benchUsers), fmt.Sprintf("token-%07d", i), storage.NewTokenID(), benchStart.Add(time.Duration(i)*time.Minute))
	}
	sh := NewShared()
	sh.publish(&snapshot{finishedAt: benchStart, interval: time.Hour, expiry: table,
		countTokens: func() map[storage.TokenKind]int { return map[storage.TokenKind]int{storage.Permanent: n} }})
	reg := prometheus.NewRegistry()
	reg.MustRegister(sh.Collector())
	b.ReportAllocs()
	for b.Loop() {
		families, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		if len(families) != 7 {
			b.Fatalf("%d metric families", len(families))
		}
	}
}
