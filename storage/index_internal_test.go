package storage

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"reflect"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// TestIndexHoldsNoPointersPerToken guards the property the 1M-token
// throughput depends on: token slots are pointer-free, so the garbage
// collector does not scan them.
func TestIndexHoldsNoPointersPerToken(t *testing.T) {
	if !pointerFree[tokenSlot]() || !pointerFree[endItem]() || !pointerFree[slotRef]() {
		t.Fatal("a per-token type of the index holds a pointer")
	}
}

func pointerFree[T any]() bool { return !hasPointers(reflect.TypeFor[T]()) }

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.String, reflect.Interface,
		reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return true
	}
	return false
}

// Benchmarks of the hot path. Verify never touches the backend, so they
// run on a Store with an index and a clock alone. The 1M case seeds a
// million tokens:
//
//	go test -run '^$' -bench 'BenchmarkVerify' -benchmem ./storage

// benchRecord is a synthetic token record for user bench; the filler
// hashes are not hashes of any secret, which does not matter to a lookup.
func benchRecord(i int, hash secret.Hash, kind TokenKind, expires time.Time) tokenRecord {
	return tokenRecord{Hash: hash, Token: Token{
		ID: benchID(i), User: "bench", Name: fmt.Sprintf("token %d", i), Kind: kind,
		CreatedAt: t0, CreatedBy: "bench", ExpiresAt: expires,
	}}
}

// benchID looks like a NewTokenID (random hex).
func benchID(i int) string {
	h := fillerHash(-1 - i)
	return fmt.Sprintf("tok_%x", h[:10])
}

func fillerHash(i int) secret.Hash {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(b[:])
}

// seedIndex puts n tokens of user bench into idx through the loader's own
// path (decode a stored record, add it, order the heap). It returns live
// secrets (the last few tokens) and one expired secret.
func seedIndex(tb testing.TB, idx *index, n int) (live []string, expired string) {
	tb.Helper()
	idx.users.put(User{Username: "bench"})
	now := time.Now()
	const real = 64
	var part loadPart
	add := func(rec tokenRecord) {
		if err := part.load(idx, rec.marshal(), now.UnixNano()); err != nil {
			tb.Fatal(err)
		}
	}
	for i := range n - real - 1 {
		add(benchRecord(i, fillerHash(i), Permanent, now.Add(365*24*time.Hour)))
	}
	for i := range real {
		sec := secret.New(Permanent)
		live = append(live, sec)
		add(benchRecord(n-real-1+i, secret.HashOf(sec), Permanent, now.Add(365*24*time.Hour)))
	}
	expired = secret.New(Permanent)
	add(benchRecord(n-1, secret.HashOf(expired), Permanent, now.Add(-time.Hour)))
	if _, err := idx.finishLoad([]loadPart{part}); err != nil {
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

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func BenchmarkVerify(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1k", 1_000}, {"1M", 1_000_000}} {
		b.Run(size.name, func(b *testing.B) {
			s := &Store{clock: SystemClock{}}
			before := heapInUse()
			idx := newIndex(nil)
			live, expired := seedIndex(b, idx, size.n)
			s.idx.Store(idx)
			indexMB := float64(heapInUse()-before) / (1 << 20)
			unknown := secret.New(Permanent)
			// Well-formed but for the checksum: the most work garbage
			// can cost, the whole CRC, and still no index access.
			bad := unknown[:len(unknown)-6] + "000000"
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
