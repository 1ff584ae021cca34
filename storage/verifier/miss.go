package verifier

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// A token created on another node reaches this node's memory through the
// change feed a few milliseconds after the creating call returned. A
// client that uses it at once, on another node, must not be refused: so a
// well-formed token missing from memory makes the node catch up with
// the feed and look again. Anyone can compute a checksum, so a flood of
// forged tokens must not become a flood of database reads. The catch-up
// is bounded three ways:
//
//   - single-flight: concurrent misses share one catch-up (the feed's
//     next poll);
//   - rate-limited: at most missRate catch-ups a second, with a burst of
//     missBurst; a miss beyond that waits for the feed's next read (a
//     notification or the poll starts it anyway), which costs the
//     database nothing, and at most missWaiters misses wait at once: the
//     others are refused at once. So a burst of legitimate creations on
//     another node, each used here at once, still passes;
//   - negatively cached: a hash still missing after a catch-up is refused
//     without another for missTTL. The only way for its token to appear
//     is a creation after that catch-up, which the feed applies within
//     milliseconds anyway.
const (
	missRate    = 20
	missBurst   = 20
	missTTL     = 2 * time.Second
	missWait    = 250 * time.Millisecond // bounds the request's wait for a catch-up
	missSlots   = 4096                   // negative cache entries, a power of two
	missWaiters = 1024                   // misses waiting for the feed at once, beyond the rate
)

// missGuard bounds the catch-ups that misses cause.
type missGuard struct {
	waiters atomic.Int32 // misses waiting for the feed's next read

	mu     sync.Mutex
	tokens float64
	last   time.Time
	// recent is a small direct-mapped cache of hashes that were missing
	// after a catch-up, until when; pointer-free and fixed in size, so a
	// flood of forged tokens costs no memory.
	recent [missSlots]struct {
		hash  secret.Hash
		until int64
	}
}

// recentlyMissing reports whether h was missing after a catch-up less
// than missTTL ago.
func (g *missGuard) recentlyMissing(h secret.Hash, now time.Time) bool {
	slot := &g.recent[missSlot(h)]
	g.mu.Lock()
	defer g.mu.Unlock()
	return slot.hash == h && now.UnixNano() < slot.until
}

// remember notes that h was missing after a catch-up at now.
func (g *missGuard) remember(h secret.Hash, now time.Time) {
	slot := &g.recent[missSlot(h)]
	g.mu.Lock()
	slot.hash, slot.until = h, now.Add(missTTL).UnixNano()
	g.mu.Unlock()
}

// missSlot places a hash in the cache; hashes are uniform, so two bytes
// are as good as any.
func missSlot(h secret.Hash) int { return (int(h[1])<<8 | int(h[2])) & (missSlots - 1) }

// allow takes one catch-up from the token bucket.
func (g *missGuard) allow(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tokens = min(missBurst, g.tokens+now.Sub(g.last).Seconds()*missRate)
	g.last = now
	if g.tokens < 1 {
		return false
	}
	g.tokens--
	return true
}

// verifyMiss handles a well-formed token that is not in memory while
// other nodes write the database: it catches up with the feed (within the
// bounds above) and looks again.
func (v *Verifier) verifyMiss(h secret.Hash, p *Policy, client netip.Addr) (Identity, Result) {
	// Real time, not the verifier's clock: these bounds protect the
	// database.
	now := time.Now()
	if v.misses.recentlyMissing(h, now) {
		return Identity{}, ResultUnknown
	}
	catchUp := v.feed.CatchUp
	if !v.misses.allow(now) {
		if v.misses.waiters.Add(1) > missWaiters {
			v.misses.waiters.Add(-1)
			return Identity{}, ResultUnknown
		}
		defer v.misses.waiters.Add(-1)
		catchUp = v.feed.AwaitFeed
	}
	ctx, cancel := context.WithTimeout(context.Background(), missWait)
	err := catchUp(ctx)
	cancel()
	if err != nil {
		return Identity{}, ResultUnknown
	}
	id, r, _ := v.cur.Load().verify(v.grants, h, v.clock.Now().UnixNano(), "", p, client)
	if r == ResultUnknown {
		v.misses.remember(h, time.Now())
	}
	return id, r
}
