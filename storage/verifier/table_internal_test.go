package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// TestTableHoldsNoPointersPerToken guards the property the 1M-token
// throughput depends on: token slots are pointer-free, so the garbage
// collector does not scan them.
func TestTableHoldsNoPointersPerToken(t *testing.T) {
	if !pointerFree[tokenSlot]() || !pointerFree[endItem]() || !pointerFree[slotRef]() {
		t.Fatal("a per-token type of the table holds a pointer")
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

// Verify allocates nothing, for a token in use, on its locked path, for
// an unknown token and for garbage.
func TestVerifyAllocatesNothing(t *testing.T) {
	v, clock := newTestVerifier()
	tok := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	v.Verify(tok.secret, nil) // caches its id and seats it in the hot table
	unknown := secret.New(secret.Permanent)
	allocs := testing.AllocsPerRun(200, func() {
		clock.Advance(time.Second) // every use is due a last-use write: the locked path
		v.Verify(tok.secret, nil)
		v.Verify(tok.secret, nil) // within the second: the hot table
		v.Verify(tok.secret, &Policy{Admin: true})
		v.Verify(unknown, nil)
		v.Verify("garbage", nil)
	})
	if allocs != 0 {
		t.Fatalf("Verify allocates %.1f times per round", allocs)
	}
}

// A token removed and another put in its slot: the new token verifies as
// itself, and the old token's queued last use is never written on the new
// one's behalf.
func TestReusedSlotIsANewToken(t *testing.T) {
	v, clock := newTestVerifier()
	old := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	oldSlot, _ := v.cur.Load().lookup(old.Hash)
	clock.Advance(2 * time.Second)
	if _, r := v.Verify(old.secret, nil); r != ResultOK {
		t.Fatalf("Verify(old) = %v", r)
	}
	v.RemoveToken(old.Hash)
	fresh := put(t, v, "root", secret.Permanent, t0.Add(2*time.Hour))
	if slot, _ := v.cur.Load().lookup(fresh.Hash); slot != oldSlot {
		t.Fatalf("the new token took slot %d, not the freed slot %d; the test does not test reuse", slot, oldSlot)
	}
	if _, r := v.Verify(old.secret, nil); r != ResultUnknown {
		t.Fatalf("Verify(removed token) = %v, want unknown", r)
	}
	if uses := flush(t, v); len(uses) != 0 {
		t.Fatalf("flushed %+v: the removed token's use, or one the new token never made", uses)
	}
	clock.Advance(2 * time.Second)
	id, r := v.Verify(fresh.secret, nil)
	if r != ResultOK || id.Username != "root" || !id.Admin || id.TokenID != string(fresh.ID) {
		t.Fatalf("Verify(new token in a reused slot) = %+v, %v", id, r)
	}
	if uses := flush(t, v); len(uses) != 1 || uses[0].TokenID != string(fresh.ID) || !uses[0].At.Equal(clock.now) {
		t.Fatalf("flushed %+v; want the new token's use at %v", uses, clock.now)
	}
}

// flush returns the uses FlushUses hands over.
func flush(t *testing.T, v *Verifier) []Use {
	t.Helper()
	var all []Use
	if err := v.FlushUses(1000, func(uses []Use) error { all = append(all, uses...); return nil }); err != nil {
		t.Fatal(err)
	}
	return all
}

// Uses that could not be written are handed over again by the next flush.
func TestFailedFlushKeepsItsUses(t *testing.T) {
	v, _ := newTestVerifier()
	tok := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	v.Verify(tok.secret, nil)
	if err := v.FlushUses(1000, func([]Use) error { return fmt.Errorf("the database is down") }); err == nil {
		t.Fatal("a failed write is not reported")
	}
	if uses := flush(t, v); len(uses) != 1 || uses[0].TokenID != string(tok.ID) {
		t.Fatalf("after a failed flush, the next flushes %+v", uses)
	}
}

// What is cached for a token (its id string, its hot entry) is kept while
// it is used and dropped once it has been idle for idleAfter; it verifies
// as before either way.
func TestIdleTokensArePruned(t *testing.T) {
	v, clock := newTestVerifier()
	tok := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	idle := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	v.Verify(idle.secret, nil)
	clock.Advance(idleAfter / 2)
	v.Verify(tok.secret, nil)
	if ids := cachedIDs(v); ids != 2 || !v.holdsSecret(idle.secret) {
		t.Fatalf("after use: %d cached ids, idle token held %v", ids, v.holdsSecret(idle.secret))
	}
	clock.Advance(idleAfter/2 + time.Second)
	v.Prune()
	if ids := cachedIDs(v); ids != 1 || v.holdsSecret(idle.secret) || !v.holdsSecret(tok.secret) {
		t.Fatalf("after pruning: %d cached ids; idle token held %v, token in use held %v", ids, v.holdsSecret(idle.secret), v.holdsSecret(tok.secret))
	}
	if id, r := v.Verify(idle.secret, nil); r != ResultOK || id.TokenID != string(idle.ID) {
		t.Fatalf("Verify after pruning = %+v, %v", id, r)
	}
}

func cachedIDs(v *Verifier) int {
	n := 0
	t := v.cur.Load()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.ids)
		sh.mu.RUnlock()
	}
	return n
}

// Only a token the locked path found enters the hot table: a flood of
// unknown or garbage secrets neither fills nor evicts it.
func TestHotTableHoldsOnlyFoundTokens(t *testing.T) {
	v, _ := newTestVerifier()
	unknown := secret.New(secret.Permanent)
	for range 3 {
		if _, r := v.Verify(unknown, nil); r != ResultUnknown {
			t.Fatalf("unknown token: %v", r)
		}
	}
	if v.holdsSecret(unknown) {
		t.Fatal("an unknown secret is held in the hot table")
	}
}

// A deleted user's number is not reused: the user created again under the
// name gets a new one, and the old user's tokens stay unknown.
func TestDeletedUsersNumberIsNotReused(t *testing.T) {
	v, _ := newTestVerifier()
	old := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	users := &v.cur.Load().users
	oldNum := users.byName["alice"].num
	v.RemoveUser("alice")
	if users.byName["alice"] != nil || users.at(oldNum).flags.Load()&flagDeleted == 0 {
		t.Fatal("a removed user is still known, or its number does not point at a deleted user")
	}
	v.PutUser(User{Name: "alice"})
	if users.byName["alice"].num == oldNum {
		t.Fatalf("the new alice reuses number %d", oldNum)
	}
	fresh := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	if _, r := v.Verify(old.secret, nil); r != ResultUnknown {
		t.Fatalf("old alice's token: %v, want unknown", r)
	}
	if id, r := v.Verify(fresh.secret, nil); r != ResultOK || id.Username != "alice" {
		t.Fatalf("new alice's token: %+v, %v", id, r)
	}
}

// A token of a user the verifier does not hold is refused and not kept,
// and so is an expired login session.
func TestTokensThatCannotVerifyAreNotKept(t *testing.T) {
	v, clock := newTestVerifier()
	orphan := newToken("ghost", secret.Permanent, t0.Add(time.Hour))
	if err := v.PutToken(orphan.Token); err != ErrUnknownUser {
		t.Fatalf("PutToken of a token of an unknown user = %v", err)
	}
	session := put(t, v, "alice", secret.Temporary, t0.Add(time.Hour))
	clock.Advance(time.Hour)
	if err := v.PutToken(session.Token); err != nil { // its record, changed after it expired
		t.Fatal(err)
	}
	for _, h := range []secret.Hash{orphan.Hash, session.Hash} {
		if _, found := v.cur.Load().lookup(h); found {
			t.Fatal("a token that can never verify is in memory")
		}
	}
}

// An expired login session leaves memory at the next Prune, and the
// counts follow every end.
func TestPruneDropsExpiredSessions(t *testing.T) {
	v, clock := newTestVerifier()
	session := put(t, v, "alice", secret.Temporary, t0.Add(time.Hour))
	perm := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	if n := v.Counts(); n[secret.Temporary] != 1 || n[secret.Permanent] != 1 {
		t.Fatalf("Counts = %v", n)
	}
	clock.Advance(time.Hour)
	v.Prune()
	if n := v.Counts(); n[secret.Temporary] != 0 || n[secret.Permanent] != 0 {
		t.Fatalf("Counts after expiry = %v", n)
	}
	if _, found := v.cur.Load().lookup(session.Hash); found {
		t.Fatal("an expired session is still in memory after Prune")
	}
	if _, r := v.Verify(perm.secret, nil); r != ResultExpired {
		t.Fatalf("the expired permanent token: %v", r)
	}
}

// A Load replaces everything at once: Verify answers from the old memory
// until Install, and from the new one after; uses not yet flushed from
// the old one are counted as dropped.
func TestLoadReplacesEverythingAtOnce(t *testing.T) {
	v, clock := newTestVerifier()
	gone := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	v.Verify(gone.secret, nil)

	load := v.NewLoad(0)
	load.AddUser(User{Name: "bob"})
	kept := newToken("bob", secret.Permanent, t0.Add(time.Hour))
	var wg sync.WaitGroup
	for _, tok := range []testToken{kept, newToken("ghost", secret.Permanent, t0.Add(time.Hour))} {
		wg.Go(func() {
			if err := load.Part().AddToken(tok.Token); err != nil && err != ErrUnknownUser {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, r := v.Verify(kept.secret, nil); r != ResultUnknown {
		t.Fatalf("before Install, a loaded token verifies as %v", r)
	}
	if dropped := load.Install(); dropped != 1 {
		t.Fatalf("Install dropped %d unflushed uses; want 1", dropped)
	}
	clock.Advance(time.Second)
	if _, r := v.Verify(gone.secret, nil); r != ResultUnknown {
		t.Fatalf("after Install, a token the load did not have verifies as %v", r)
	}
	if id, r := v.Verify(kept.secret, nil); r != ResultOK || id.Username != "bob" {
		t.Fatalf("after Install, the loaded token: %+v, %v", id, r)
	}
	if n := v.Counts(); n[secret.Permanent] != 1 {
		t.Fatalf("Counts after Install = %v", n)
	}
}

// Benchmarks of Verify, on a verifier loaded with 1k or 1M tokens:
//
//	go test -run '^$' -bench 'BenchmarkVerify' -benchmem ./storage/verifier

// fillerHash is a hash of no secret, which does not matter to a lookup.
func fillerHash(i int) secret.Hash {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(b[:])
}

// loaded returns a verifier loaded, as a reset loads it, with n tokens of
// user bench, and live secrets (the last few tokens) and one expired
// secret.
func loaded(tb testing.TB, n int) (v *Verifier, live []string, expired string) {
	tb.Helper()
	v = New(Config{Clock: systemClock{}})
	load := v.NewLoad(n)
	load.AddUser(User{Name: "bench"})
	part := load.Part()
	now := time.Now()
	add := func(i int, hash secret.Hash, expires time.Time) {
		h := fillerHash(-1 - i)
		id := fmt.Appendf(nil, "tok_%x", h[:10])
		if err := part.AddToken(Token{Hash: hash, ID: id, User: []byte("bench"), Kind: secret.Permanent, ExpiresAt: expires.UnixNano()}); err != nil {
			tb.Fatal(err)
		}
	}
	const real = 64
	for i := range n - real - 1 {
		add(i, fillerHash(i), now.Add(365*24*time.Hour))
	}
	for i := range real {
		sec := secret.New(secret.Permanent)
		live = append(live, sec)
		add(n-real-1+i, secret.HashOf(sec), now.Add(365*24*time.Hour))
	}
	expired = secret.New(secret.Permanent)
	add(n-1, secret.HashOf(expired), now.Add(-time.Hour))
	load.Install()
	return v, live, expired
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

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
			before := heapInUse()
			v, live, expired := loaded(b, size.n)
			tableMB := float64(heapInUse()-before) / (1 << 20)
			unknown := secret.New(secret.Permanent)
			// Well-formed but for the checksum: the most work garbage
			// can cost, the whole CRC, and still no lookup.
			bad := unknown[:len(unknown)-6] + "000000"
			run := func(name string, want Result, secrets ...string) {
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					cpu := cpuSeconds()
					for b.Loop() {
						if _, r := v.Verify(secrets[i%len(secrets)], nil); r != want {
							b.Fatalf("Verify = %v; want %v", r, want)
						}
						i++
					}
					// After the loop, which resets metrics. CPU time per call
					// is steadier than wall time on a shared machine.
					b.ReportMetric((cpuSeconds()-cpu)*1e9/float64(b.N), "cpu-ns/op")
					b.ReportMetric(tableMB, "table-MB")
				})
			}
			run("warm_hit", ResultOK, live...)
			run("unknown", ResultUnknown, unknown)
			run("bad_checksum", ResultMalformed, bad)
			run("expired", ResultExpired, expired)
			// A forced full collection with the table live: what marking
			// it adds to every GC cycle in a running gateway.
			b.Run("full_gc", func(b *testing.B) {
				for b.Loop() {
					runtime.GC()
				}
				runtime.KeepAlive(v)
			})
			b.Run("warm_hit_parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, r := v.Verify(live[i%len(live)], nil); r != ResultOK {
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

// countingFeed is a Feed that counts the catch-ups the verifier asks for.
type countingFeed struct{ catchUps, waits atomic.Int32 }

func (f *countingFeed) CatchUp(context.Context) error   { f.catchUps.Add(1); return nil }
func (f *countingFeed) AwaitFeed(context.Context) error { f.waits.Add(1); return nil }

// A token the verifier removed (deleted, logged out, a session that
// expired) is refused at once, as unknown: on a fleet it is not taken for
// a token another node created a moment ago, which would cost a catch-up
// with the database, or a wait for the feed's next read. A token never
// seen still is.
func TestRemovedTokensAreRefusedWithoutACatchUp(t *testing.T) {
	clock := &fakeClock{now: t0}
	feed := new(countingFeed)
	v := New(Config{Clock: clock, Feed: feed})
	v.PutUser(User{Name: "alice"})
	deleted := put(t, v, "alice", secret.Permanent, t0.Add(time.Hour))
	session := put(t, v, "alice", secret.Temporary, t0.Add(time.Minute))
	v.Verify(deleted.secret, nil) // in use: in the hot table too
	v.RemoveToken(deleted.Hash)
	clock.Advance(time.Minute)
	v.Prune() // the session expired and leaves memory
	for _, tok := range []testToken{deleted, session} {
		if _, r := v.Verify(tok.secret, nil); r != ResultUnknown {
			t.Fatalf("a removed token: %v", r)
		}
	}
	if n := feed.catchUps.Load() + feed.waits.Load(); n != 0 {
		t.Fatalf("removed tokens cost %d catch-ups", n)
	}
	if _, r := v.Verify(secret.New(secret.Permanent), nil); r != ResultUnknown || feed.catchUps.Load() != 1 {
		t.Fatalf("a token never seen: %v after %d catch-ups; want unknown after one", r, feed.catchUps.Load())
	}

	// A reload keeps what was removed, and forgets what it loads again.
	load := v.NewLoad(0)
	load.AddUser(User{Name: "alice"})
	if err := load.Part().AddToken(session.Token); err != nil { // a session record the reload still found
		t.Fatal(err)
	}
	load.Install()
	if _, r := v.Verify(deleted.secret, nil); r != ResultUnknown || feed.catchUps.Load() != 1 {
		t.Fatalf("after a reload, a removed token: %v after %d catch-ups", r, feed.catchUps.Load())
	}
}

// What a shard remembers is bounded: past removedPerShard removals the
// oldest is forgotten, and is then a token never seen.
func TestRemovedTokensAreRememberedBounded(t *testing.T) {
	v, _ := newTestVerifier()
	hashes := make([]secret.Hash, removedPerShard+1)
	for i := range hashes {
		hashes[i][0] = 7 // all in one shard
		binary.BigEndian.PutUint32(hashes[i][1:], uint32(i+1))
		tok := Token{Hash: hashes[i], ID: []byte(newID()), User: []byte("alice"), Kind: secret.Permanent, ExpiresAt: t0.Add(time.Hour).UnixNano()}
		if err := v.PutToken(tok); err != nil {
			t.Fatal(err)
		}
		v.RemoveToken(hashes[i])
	}
	unseen := func(h secret.Hash) bool {
		_, _, u := v.cur.Load().verify(v.grants, h, t0.UnixNano(), "", nil, netip.Addr{})
		return u
	}
	if !unseen(hashes[0]) || unseen(hashes[1]) || unseen(hashes[removedPerShard]) {
		t.Fatalf("after %d removals in one shard: the first unseen %v, the second %v, the last %v; want true, false, false",
			removedPerShard+1, unseen(hashes[0]), unseen(hashes[1]), unseen(hashes[removedPerShard]))
	}
}
