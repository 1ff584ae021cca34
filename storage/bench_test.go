package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Benchmarks of the hot path and of start-up. The 1M cases only run when
// -bench selects them, e.g.
//
//	go test -run '^$' -bench 'BenchmarkVerify' -benchmem ./storage
//	go test -run '^$' -bench 'BenchmarkOpen1M' -benchtime 3x ./storage
//	go test -run '^$' -bench 'BenchmarkForEachPermanentToken/1M' -benchtime 3x ./storage

// benchRecord is a synthetic token record for user bench; the filler
// hashes are not hashes of any secret, which does not matter to a lookup.
func benchRecord(i int, hash SecretHash, kind TokenKind, expires time.Time) tokenRecord {
	return tokenRecord{Hash: hash, Token: Token{
		ID: benchID(i), User: "bench", Name: fmt.Sprintf("token %d", i), Kind: kind,
		CreatedAt: t0, CreatedBy: "bench", ExpiresAt: expires,
	}}
}

// benchID looks like a NewTokenID (random hex), so the loader's split of
// the key space by first hex digit sees the same spread as in production.
func benchID(i int) string {
	h := fillerHash(-1 - i)
	return fmt.Sprintf("tok_%x", h[:10])
}

func fillerHash(i int) SecretHash {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(b[:])
}

// seedIndex puts n tokens into the index through the loader's own path
// (decode a stored record, add it, order the heap), without the disk.
// It returns live secrets (the last few tokens) and one expired secret.
func seedIndex(tb testing.TB, s *Badger, n int) (live []string, expired string) {
	tb.Helper()
	now := time.Now()
	const real = 64
	var part loadPart
	add := func(rec tokenRecord) {
		if _, _, err := part.load(s, rec.marshal(), now.UnixNano()); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range n - real - 1 {
		add(benchRecord(i, fillerHash(i), Permanent, now.Add(365*24*time.Hour)))
	}
	for i := range real {
		sec := NewSecret(Permanent)
		live = append(live, sec)
		add(benchRecord(n-real-1+i, HashSecret(sec), Permanent, now.Add(365*24*time.Hour)))
	}
	expired = NewSecret(Permanent)
	add(benchRecord(n-1, HashSecret(expired), Permanent, now.Add(-time.Hour)))
	if _, err := s.idx.finishLoad([]loadPart{part}); err != nil {
		tb.Fatal(err)
	}
	return live, expired
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func BenchmarkVerify(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1k", 1_000}, {"1M", 1_000_000}} {
		b.Run(size.name, func(b *testing.B) {
			s := openTest(b, b.TempDir(), SystemClock{})
			mustCreateUser(b, s, "bench", false)
			before := heapInUse()
			live, expired := seedIndex(b, s, size.n)
			indexMB := float64(heapInUse()-before) / (1 << 20)
			unknown := NewSecret(Permanent)
			// Well-formed but for the checksum: the most work garbage
			// can cost, the whole CRC, and still no index access.
			bad := unknown[:len(unknown)-checksumLen] + "000000"
			run := func(name string, want VerifyResult, secrets ...string) {
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					cpu := cpuSeconds()
					for b.Loop() {
						if _, r := s.Verify(secrets[i%len(secrets)]); r != want {
							b.Fatalf("Verify = %v; want %v", r, want)
						}
						i++
					}
					// After the loop, which resets metrics. CPU time per call
					// is steadier than wall time on a shared machine.
					b.ReportMetric((cpuSeconds()-cpu)*1e9/float64(b.N), "cpu-ns/op")
					b.ReportMetric(indexMB, "index-MB")
				})
			}
			run("warm_hit", ResultOK, live...)
			run("unknown", ResultUnknown, unknown)
			run("bad_checksum", ResultMalformed, bad)
			run("expired", ResultExpired, expired)
			// A forced full collection with the index live: what marking
			// the index adds to every GC cycle in a running gateway.
			b.Run("full_gc", func(b *testing.B) {
				for b.Loop() {
					runtime.GC()
				}
				runtime.KeepAlive(s)
			})
			b.Run("warm_hit_parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, r := s.Verify(live[i%len(live)]); r != ResultOK {
							b.Errorf("Verify = %v", r)
							return
						}
						i++
					}
				})
			})
		})
	}
}

// BenchmarkOpen1M measures OpenBadger on a directory holding a million
// token records, each with a last use: the time to stream them into the
// index, and the heap the open store holds afterwards.
func BenchmarkOpen1M(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	clock := NewFakeClock(t0)
	s := openTest(b, dir, clock)
	mustCreateUser(b, s, "bench", false)
	wb := s.db.NewWriteBatch()
	for i := range n {
		rec := benchRecord(i, fillerHash(i), Permanent, t0.Add(365*24*time.Hour))
		if err := wb.Set([]byte(tokenKey(rec.ID)), rec.marshal()); err != nil {
			b.Fatal(err)
		}
		if err := wb.Set([]byte(lastUsedKey(rec.ID)), []byte(be64(t0.UnixNano()))); err != nil {
			b.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	var heapMB, cpu float64
	for b.Loop() {
		before := heapInUse()
		cpuBefore := cpuSeconds()
		s := openTest(b, dir, clock)
		cpu += cpuSeconds() - cpuBefore
		b.StopTimer()
		heapMB = float64(heapInUse()-before) / (1 << 20)
		if got := s.CountTokens()[Permanent]; got != n {
			b.Fatalf("loaded %d tokens; want %d", got, n)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(heapMB, "heap-MB")
	// CPU time is steadier than wall time on a shared machine.
	b.ReportMetric(cpu/float64(b.N), "cpu-s/op")
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkCreateToken measures one durable mutation: a token, its index
// keys and its audit entry in one fsynced transaction.
func BenchmarkCreateToken(b *testing.B) {
	s := openTest(b, b.TempDir(), SystemClock{})
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
}

// createUserTokens gives user n permanent tokens through the bulk path
// (CreateTokens, a thousand per transaction), with expiries spread over a
// year in an order unrelated to their ids, and returns their secrets.
func createUserTokens(tb testing.TB, s *Badger, user string, n int) []string {
	tb.Helper()
	now := s.clock.Now()
	secrets := make([]string, 0, n)
	batch := make([]NewToken, 0, maxBatch)
	for i := 0; i < n; i += maxBatch {
		batch = batch[:0]
		for j := i; j < min(i+maxBatch, n); j++ {
			exp := now.Add(time.Duration(1+j*7919%365)*24*time.Hour + time.Duration(j)*time.Second)
			batch = append(batch, NewToken{User: user, Name: fmt.Sprintf("token-%d", j), Kind: Permanent, ExpiresAt: exp})
		}
		sec, _, err := s.CreateTokens(ctxAs("root"), batch)
		if err != nil {
			tb.Fatalf("CreateTokens: %v", err)
		}
		secrets = append(secrets, sec...)
	}
	return secrets
}

// benchSelects reports whether the -bench pattern names what, so that
// sub-benchmarks that seed a million tokens run only when asked for.
func benchSelects(what string) bool {
	f := flag.Lookup("test.bench")
	return f != nil && strings.Contains(f.Value.String(), what)
}

// BenchmarkForEachPermanentToken measures one walk of every permanent
// token, as the alert loop does once per pass, over a store written by the
// real write path and reopened (so the data sits in tables, not in the
// memtable). Every token has been used, so each has a last-use record.
func BenchmarkForEachPermanentToken(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"100k", 100_000}, {"1M", 1_000_000}} {
		b.Run(size.name, func(b *testing.B) {
			if size.n > 100_000 && !benchSelects(size.name) {
				b.Skipf("seeds %d tokens; select it with -bench 'ForEachPermanentToken/%s'", size.n, size.name)
			}
			dir := b.TempDir()
			clock := NewFakeClock(t0)
			s := openTest(b, dir, clock)
			mustCreateUser(b, s, "bench", false)
			for _, sec := range createUserTokens(b, s, "bench", size.n) {
				s.Verify(sec)
			}
			if err := s.Close(); err != nil { // flushes the last uses
				b.Fatal(err)
			}
			s = openTest(b, dir, clock)
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuSeconds()
			for b.Loop() {
				n := 0
				var last time.Time
				err := s.ForEachPermanentToken(ctx, func(t Token) error {
					if t.ExpiresAt.Before(last) || t.LastUsedAt == nil {
						return fmt.Errorf("token %s out of order or without its last use", t.ID)
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
}
