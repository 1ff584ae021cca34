package verifier

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// A table is every token the verifier holds (all of them, except
// temporary ones once they have expired). It is built whole from a
// snapshot when the change feed resets (a Load, at open and when a node
// reloads) and changed in place by each change after that, so it is never
// ahead of the database, and never behind a mutation that returned on
// this node (a backend applies a change before its write returns).
//
// It holds no pointers per token: a token is a numbered slot in an arena,
// found through hash -> slot maps split into shards (so readers on
// different cores rarely touch the same lock), and its user is a number
// too. The garbage collector therefore never scans a million tokens: with
// a pointer per field, marking them took most of each GC cycle and cost
// the gateway about a tenth of its throughput.
//
// Slot lifecycle, and why reading a slot is safe: a slot is allocated and
// filled under writeMu (or by a Load, before the table is in use), put in
// its shard's map, and only released after being deleted from that map
// under the shard's write lock. The locked path reads a slot while holding
// the shard's read lock and finding it in the map, so the slot cannot be
// released, let alone reused, under it. The hot table reads a slot with no
// lock, only its atomic fields, and checks the slot's generation before
// and after. Holders of a bare slot number (the end heap, the last-use
// queue) compare the slot's generation, which release increments under
// countMu; the last-use flush also holds writeMu while it reads, so a slot
// it checked is not refilled meanwhile.
type table struct {
	// hot finds the tokens in use by their secret; first, so that its
	// seed is on the line the table's address points to.
	hot hotTable

	// writeMu serializes every structural change: the feed's changes, the
	// sweep's removals and the last-use flush's reads.
	writeMu sync.Mutex

	shards [numShards]shard
	slots  arena[tokenSlot]
	users  userTable

	// live counts active tokens by kind; ends orders the counted tokens by
	// the time they stop being active, so expiry is subtracted lazily.
	countMu sync.Mutex
	live    [3]int // by kind byte
	ends    endHeap

	// dirty lists the uses not flushed yet, one per slot and flush.
	dirtyMu sync.Mutex
	dirty   []pendingUse
	epoch   uint32 // counts the flushes; a slot's queued is of one epoch
}

const numShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[secret.Hash]uint32 // hash -> slot number
	// ids holds the id strings of the tokens in use, by slot, so that a
	// request allocates nothing for the Identity it returns; entries idle
	// for idleAfter are pruned, so only tokens in use cost pointers the
	// GC scans.
	ids map[uint32]string
	// removed remembers the tokens of this shard that left the table
	// lately (deleted, logged out, expired sessions), so that a request
	// with one is refused at once, not taken for a token created on
	// another node a moment ago (verifyMiss). At most removedPerShard,
	// the oldest forgotten first (removedRing, which also keeps shards'
	// locks on separate cache lines).
	removed     map[secret.Hash]struct{}
	removedNext int
	removedRing [removedPerShard]secret.Hash
}

// removedPerShard bounds what a shard remembers of removed tokens: 256
// shards of 256, so the last 65,536 removals, about 5 MB, none of it
// scanned by the GC. Only an authenticated change removes a token, so no
// request can make the verifier forget one.
const removedPerShard = 256

// idleAfter is how long an unused token's id string and hot entry are
// kept.
const idleAfter = 10 * time.Minute

// tokenSlot is one token in memory, 128 bytes without a pointer. Only
// revoked, scopes, networks, the uses and gen change while a token
// occupies it; counted is guarded by table.countMu, queued by
// table.dirtyMu.
type tokenSlot struct {
	hash     secret.Hash
	id       [TokenIDLen]byte
	expires  int64         // unix nanoseconds
	revoked  atomic.Int64  // unix nanoseconds; 0 = not revoked
	scopes   atomic.Uint64 // mask (grants.go)
	lastUsed atomic.Int64  // unix nanoseconds; 0 = never used since the Load
	// usedScopes and missingScopes are the scopes routes needed and
	// shadow routes found missing since the last flush (masks).
	usedScopes    atomic.Uint64
	missingScopes atomic.Uint64
	queued        uint64        // where the slot's use waits for the flush (uses.go)
	user          uint32        // number in table.users
	networks      atomic.Uint32 // number in grants' network lists; 0 = any
	gen           atomic.Uint32
	kind          byte // kindTemporary or kindPermanent
	counted       bool // in table.live
}

// TokenIDLen is the length of every token id: the verifier keeps ids
// inline, at this size.
const TokenIDLen = len("tok_") + 20

const (
	kindTemporary = 1
	kindPermanent = 2
)

func kindByte(k secret.Kind) byte {
	if k == secret.Temporary {
		return kindTemporary
	}
	return kindPermanent
}

func kindOf(b byte) secret.Kind {
	if b == kindTemporary {
		return secret.Temporary
	}
	return secret.Permanent
}

// slotRef names a slot's occupant: the slot and its generation.
type slotRef struct{ slot, gen uint32 }

func (e *tokenSlot) tokenID() string { return string(e.id[:]) }

// end is when the token stops being active: its expiry or its revocation.
func (e *tokenSlot) end() int64 {
	if r := e.revoked.Load(); r != 0 && r < e.expires {
		return r
	}
	return e.expires
}

func newTable(sizeHint int) *table {
	t := &table{users: userTable{byName: map[string]*userState{}}}
	t.hot.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[secret.Hash]uint32, sizeHint/numShards)
		t.shards[i].ids = map[uint32]string{}
		t.shards[i].removed = map[secret.Hash]struct{}{}
	}
	return t
}

func (t *table) shardFor(h secret.Hash) *shard { return &t.shards[h[0]] }

// entry is what the table keeps of a token, as it is put in.
type entry struct {
	hash             secret.Hash
	id               []byte
	user             *userState
	kind             byte
	expires, revoked int64
	scopes           uint64
	networks         uint32
}

// add puts a token in the table and counts it if it is active at now.
// The caller holds writeMu.
func (t *table) add(f entry, now int64) {
	i := t.place(f)
	t.countMu.Lock()
	t.count(i, t.slots.at(i), now)
	t.countMu.Unlock()
}

// place fills a free slot with a token and makes it findable; the caller
// holds writeMu or is a Load, and counts it.
func (t *table) place(f entry) uint32 {
	i := t.slots.alloc()
	e := t.slots.at(i)
	e.hash, e.user, e.kind, e.expires = f.hash, f.user.num, f.kind, f.expires
	copy(e.id[:], f.id)
	e.revoked.Store(f.revoked)
	e.scopes.Store(f.scopes)
	e.networks.Store(f.networks)
	e.lastUsed.Store(0)
	e.usedScopes.Store(0)
	e.missingScopes.Store(0)
	sh := t.shardFor(f.hash)
	sh.mu.Lock()
	sh.m[f.hash] = i
	delete(sh.removed, f.hash)
	sh.mu.Unlock()
	return i
}

// count adds a slot to the live counts if it is active; countMu must be
// held.
func (t *table) count(i uint32, e *tokenSlot, now int64) {
	if end := e.end(); end > now && !e.counted {
		e.counted = true
		t.live[e.kind]++
		t.ends.push(endItem{end, slotRef{i, e.gen.Load()}})
	}
}

func (t *table) uncount(e *tokenSlot) {
	if e.counted {
		e.counted = false
		t.live[e.kind]--
	}
}

// lookup returns the slot of the token with hash h.
func (t *table) lookup(h secret.Hash) (uint32, bool) {
	sh := t.shardFor(h)
	sh.mu.RLock()
	i, ok := sh.m[h]
	sh.mu.RUnlock()
	return i, ok
}

// remove takes the token with hash h out of the table, if it is there,
// and frees its slot; Verify no longer finds it.
func (t *table) remove(h secret.Hash) { t.removeSlot(h, nil) }

// removeSlot removes h if it is in the table, and if slot is not nil only
// if it is still in *slot.
func (t *table) removeSlot(h secret.Hash, slot *uint32) {
	sh := t.shardFor(h)
	sh.mu.Lock()
	i, ok := sh.m[h]
	if ok && (slot == nil || *slot == i) {
		delete(sh.m, h)
		delete(sh.ids, i)
		sh.remember(h)
	} else {
		ok = false
	}
	sh.mu.Unlock()
	if !ok {
		return
	}
	e := t.slots.at(i)
	t.countMu.Lock()
	t.uncount(e)
	e.gen.Add(1)
	t.countMu.Unlock()
	t.slots.release(i)
}

// remember notes that the token with hash h was removed; the caller holds
// the shard's write lock.
func (sh *shard) remember(h secret.Hash) {
	if old := sh.removedRing[sh.removedNext]; old != (secret.Hash{}) {
		delete(sh.removed, old)
	}
	sh.removedRing[sh.removedNext] = h
	sh.removedNext = (sh.removedNext + 1) % removedPerShard
	sh.removed[h] = struct{}{}
}

// update sets what may change of a held token (its revocation time,
// scopes and networks) from f, and re-files it in the end order.
func (t *table) update(f entry, now int64) {
	sh := t.shardFor(f.hash)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.m[f.hash]
	if !ok {
		return
	}
	e := t.slots.at(i)
	e.scopes.Store(f.scopes)
	e.networks.Store(f.networks)
	e.revoked.Store(f.revoked)
	t.countMu.Lock()
	t.uncount(e)
	t.count(i, e, now)
	t.countMu.Unlock()
}

// lastUsedOf returns the last use this node has seen of the token with
// hash h (unix nanoseconds, 0 if none).
func (t *table) lastUsedOf(h secret.Hash) int64 {
	sh := t.shardFor(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.m[h]
	if !ok {
		return 0
	}
	return t.slots.at(i).lastUsed.Load()
}

// sweep stops counting tokens that are no longer active at now and drops
// expired temporary tokens from memory (their records expire on disk by
// TTL). The heap makes this O(log n) per token that ended, O(1) otherwise.
func (t *table) sweep(now time.Time) {
	n := now.UnixNano()
	type gone struct {
		hash secret.Hash
		slot uint32
	}
	var drop []gone
	t.countMu.Lock()
	for len(t.ends) > 0 && t.ends[0].end <= n {
		it := t.ends.pop()
		e := t.slots.at(it.ref.slot)
		// Under countMu a slot of the same generation cannot be released.
		if e.gen.Load() != it.ref.gen || !e.counted || it.end != e.end() {
			continue // removed, or re-filed under a new end
		}
		e.counted = false
		t.live[e.kind]--
		if e.kind == kindTemporary && e.expires <= n {
			drop = append(drop, gone{e.hash, it.ref.slot})
		}
	}
	t.countMu.Unlock()
	for _, g := range drop {
		t.removeSlot(g.hash, &g.slot)
	}
}

// pruneIdle drops the cached ids and hot entries of tokens not used for
// idleAfter, so the pointers and secrets held are those of tokens in use.
func (t *table) pruneIdle(now time.Time) {
	cutoff := now.Add(-idleAfter).UnixNano()
	t.hot.prune(cutoff)
	for s := range t.shards {
		sh := &t.shards[s]
		sh.mu.Lock()
		for i := range sh.ids {
			if t.slots.at(i).lastUsed.Load() < cutoff {
				delete(sh.ids, i)
			}
		}
		sh.mu.Unlock()
	}
}

// counts returns the active tokens by kind at now.
func (t *table) counts(now time.Time) map[secret.Kind]int {
	t.sweep(now)
	t.countMu.Lock()
	defer t.countMu.Unlock()
	return map[secret.Kind]int{
		secret.Temporary: t.live[kindTemporary],
		secret.Permanent: t.live[kindPermanent],
	}
}

// verify decides the token with hash h at now for a request from client,
// taking its shard's lock. A token found valid (or refused only by what
// the route or request asks) is put in the hot table under its secret,
// when one is given. unseen reports a token the table neither holds nor
// removed lately: one that another node may have just created.
func (t *table) verify(g *grants, h secret.Hash, now int64, presented string, p *Policy, client netip.Addr) (id Identity, r Result, unseen bool) {
	sh := t.shardFor(h)
	sh.mu.RLock()
	i, ok := sh.m[h]
	if !ok {
		_, removed := sh.removed[h]
		sh.mu.RUnlock()
		return Identity{}, ResultUnknown, !removed
	}
	e := t.slots.at(i)
	user := t.users.at(e.user)
	s := state{expires: e.expires, revoked: e.revoked.Load(), userFlags: user.flags.Load()}
	s.inNetwork = g.allows(e.networks.Load(), client)
	s.effective = effectiveScopes(e.scopes.Load(), user.scopes.Load(), s.userFlags)
	r = decide(&s, p, now)
	if r != ResultOK && !r.RefusedByRoute() {
		sh.mu.RUnlock()
		return Identity{}, r, false
	}
	t.markUsed(i, e, now, usageOf(&s, p, r), client)
	// The slot cannot change occupant while the lock is held: these are
	// this token's.
	gen, kind, expires := e.gen.Load(), e.kind, e.expires
	tokenID := sh.ids[i]
	sh.mu.RUnlock()
	if tokenID == "" {
		if tokenID = t.cacheID(sh, h, i); tokenID == "" {
			return Identity{}, ResultUnknown, false // removed since the read lock
		}
	}
	if presented != "" {
		t.hot.put(presented, &hotEntry{gen: gen, kind: kind, expires: expires, slot: e, user: user, tokenID: tokenID, hash: h}, now)
	}
	return Identity{Username: user.name, TokenID: tokenID, Kind: kindOf(kind), Admin: s.userFlags&flagAdmin != 0, Scopes: s.effective, Hash: h}, r, false
}

// cacheID makes and caches the id string of slot i (hash h); it returns
// "" if the token has left the table meanwhile.
func (t *table) cacheID(sh *shard, h secret.Hash, i uint32) string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if j, ok := sh.m[h]; !ok || j != i {
		return ""
	}
	id := sh.ids[i]
	if id == "" {
		id = t.slots.at(i).tokenID()
		sh.ids[i] = id
	}
	return id
}
