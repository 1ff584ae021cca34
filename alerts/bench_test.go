package alerts

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
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
// expiries spread evenly over a year, for benchUsers users. It is seeded
// once through CreateTokens (a thousand tokens per transaction) and kept,
// on tmpfs where there is one, across benchmark runs; a marker file says it
// is complete.
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
	clock := testtools.NewFakeClock(benchStart)
	db, err := badgerstore.Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := storage.Open(context.Background(), db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for u := range benchUsers {
		if _, err := st.CreateUser(ctx, storage.NewUser{Username: fmt.Sprintf("user%04d", u), Email: "u@example.com", Password: "bench-password"}); err != nil {
			b.Fatal(err)
		}
	}
	batch := make([]storage.NewToken, 0, 1000)
	for i := 0; i < n; i += cap(batch) {
		batch = batch[:0]
		for j := i; j < min(n, i+cap(batch)); j++ {
			expires := benchStart.Add(time.Hour + time.Duration(j)*(year/time.Duration(n)))
			batch = append(batch, storage.NewToken{User: fmt.Sprintf("user%04d", j%benchUsers),
				Name: fmt.Sprintf("token-%07d", j), Kind: storage.Permanent, ExpiresAt: expires, CreatedBy: "bench"})
		}
		if _, _, err := st.CreateTokens(ctx, batch); err != nil {
			b.Fatal(err)
		}
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
// over a year and thresholds 30;7;1: about 8% of them are faults. No email
// is sent (no recipients are set), so the figure is the scan, the faults
// and the metrics snapshot.
//
// Besides the time per pass it reports, in MiB: view, the live heap the
// last pass's view keeps between passes; pass-peak-live, the most live
// heap a pass adds on top of that steady state (runtime/metrics
// /gc/heap/live:bytes as measured by each GC during the passes, so garbage
// awaiting collection does not count); and pass-peak-alloc, the same for
// HeapAlloc (runtime.MemStats, sampled; includes that garbage). The view
// holds one Fault per token in the window and one expiry series per
// active token within the largest threshold; the rest of the pass
// streams.
func BenchmarkAlertPass(b *testing.B) {
	n := benchTokens(b)
	dir := seededStore(b, n)
	clock := testtools.NewFakeClock(benchStart.Add(time.Minute))
	db, err := badgerstore.Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := storage.Open(context.Background(), db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	storeLive, _ := heapAfterGC()
	sh, err := NewShared(ctx, st.Alerting())
	if err != nil {
		b.Fatal(err)
	}
	// Give the lease back: the seeded store outlives the benchmark, and a
	// lease left in it would make the next benchmark a follower.
	defer sh.resign(ctx)
	loop := NewLoop(Config{Clock: clock, Interval: time.Hour, Shared: sh})
	if err := loop.RunOnce(ctx); err != nil { // the steady state: one view published
		b.Fatal(err)
	}
	steadyLive, steadyAlloc := heapAfterGC()

	sampler := startHeapSampler()
	b.ResetTimer()
	for b.Loop() {
		if err := loop.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	peakLive, peakAlloc := sampler.stop()

	v := loop.cfg.Shared.current()
	const mib = 1 << 20
	b.ReportMetric(float64(n), "tokens")
	b.ReportMetric(float64(len(v.Faults)), "faults")
	b.ReportMetric(float64(len(v.Expiring)), "series")
	b.ReportMetric(float64(int64(steadyLive)-int64(storeLive))/mib, "view-MiB")
	b.ReportMetric(float64(int64(peakLive)-int64(steadyLive))/mib, "pass-peak-live-MiB")
	b.ReportMetric(float64(int64(peakAlloc)-int64(steadyAlloc))/mib, "pass-peak-alloc-MiB")
}

// heapAfterGC returns the live heap and HeapAlloc right after a full GC.
func heapAfterGC() (live, alloc uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return liveHeap(), m.HeapAlloc
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapSampler records the highest live heap and HeapAlloc seen while it
// runs.
type heapSampler struct {
	stopc chan struct{}
	done  chan [2]uint64
}

func startHeapSampler() *heapSampler {
	s := &heapSampler{stopc: make(chan struct{}), done: make(chan [2]uint64)}
	go func() {
		var peakLive, peakAlloc uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peakAlloc = max(peakAlloc, m.HeapAlloc)
			if live := liveHeap(); live > peakLive {
				peakLive = live
				writePeakProfile()
			}
			select {
			case <-s.stopc:
				s.done <- [2]uint64{peakLive, peakAlloc}
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// writePeakProfile saves the heap profile (live objects as of the last GC)
// to $ALERTS_BENCH_HEAP_PROFILE, to tell what the peak consists of.
func writePeakProfile() {
	path := os.Getenv("ALERTS_BENCH_HEAP_PROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("heap").WriteTo(f, 0)
}

func (s *heapSampler) stop() (live, alloc uint64) {
	close(s.stopc)
	r := <-s.done
	return r[0], r[1]
}

// BenchmarkScrape measures one scrape of the collector (its share of
// Caddy's /metrics) over the seeded store of a million permanent tokens,
// with thresholds 30;7;1: with none of them near expiry (the clock set 60
// days before the first expires), and with the clock at the seeding, when
// about 8% are inside the 30-day window and each has its series. It
// reports the exposition's size.
func BenchmarkScrape(b *testing.B) {
	n := benchTokens(b)
	dir := seededStore(b, n)
	for _, tc := range []struct {
		name string
		now  time.Time
	}{{"none_near_expiry", benchStart.Add(-60 * day)}, {"8pct_in_window", benchStart.Add(time.Minute)}} {
		b.Run(tc.name, func(b *testing.B) {
			db, err := badgerstore.Open(dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			st, err := storage.Open(context.Background(), db, storage.Options{Clock: testtools.NewFakeClock(tc.now), PasswordCost: bcrypt.MinCost})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			sh, err := NewShared(ctx, st.Alerting())
			if err != nil {
				b.Fatal(err)
			}
			defer sh.resign(ctx)
			if err := NewLoop(Config{Clock: testtools.NewFakeClock(tc.now), Interval: time.Hour, Shared: sh}).RunOnce(ctx); err != nil {
				b.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(sh.Collector())
			var size int
			b.ReportAllocs()
			for b.Loop() {
				families, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				var buf bytes.Buffer
				for _, f := range families {
					if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
						b.Fatal(err)
					}
				}
				size = buf.Len()
			}
			b.ReportMetric(float64(size)/1024, "KiB")
			b.ReportMetric(float64(len(sh.current().Expiring)), "series")
		})
	}
}
