package storage

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The index is the in-memory view of the tokens that Verify reads (all of
// them, except temporary ones once they have expired): hash -> entry, split into shards so readers on different cores rarely
// touch the same lock. It is built at open from the token records and
// changed by the write path after each commit, so it is never ahead of the
// disk and never behind a returned mutation.
type index struct {
	shards [numShards]shard

	// users maps usernames to their shared state; guarded by Badger.mu
	// (only the write path and the loader touch it).
	users map[string]*userState

	// live counts active tokens by kind; ends orders the counted tokens by
	// the time they stop being active, so expiry is subtracted lazily.
	countMu sync.Mutex
	live    [3]int // by kind byte
	ends    endHeap

	// dirty lists entries whose last use changed since the last flush.
	dirtyMu sync.Mutex
	dirty   []*tokenEntry
}

const numShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[SecretHash]*tokenEntry
	_  [64 - 32]byte // keep shards on separate cache lines
}

// userState is shared by all of a user's entries, so disabling or promoting
// a user is one atomic store that the very next Verify sees.
type userState struct {
	name  string
	flags atomic.Uint32
}

const (
	flagAdmin uint32 = 1 << iota
	flagDisabled
	// flagDeleted marks a deleted user whose tokens are still being
	// purged: they verify as unknown, as they will once purged.
	flagDeleted
)

func userFlags(u User) uint32 {
	var f uint32
	if u.Admin {
		f |= flagAdmin
	}
	if u.Disabled {
		f |= flagDisabled
	}
	return f
}

// tokenEntry is one token in memory. Only revoked, lastUsed and the caches
// change after creation.
//
// Fields are ordered and sized to fit 96 bytes: a million tokens cost
// about 225 MB of index (BenchmarkVerify/1M reports it), most of it this
// struct, its id and the map slot pointing at it.
type tokenEntry struct {
	hash     SecretHash
	id       string
	user     *userState
	meta     atomic.Pointer[identityMeta]
	expires  int64         // unix nanoseconds
	revoked  atomic.Int64  // unix nanoseconds; 0 = not revoked
	lastUsed atomic.Int64  // unix nanoseconds; 0 = never used since open
	state    atomic.Uint32 // stateDirty | stateRemoved
	kind     byte          // kindByteTemporary or kindBytePermanent
	counted  bool          // in index.live; guarded by index.countMu
}

const (
	stateDirty   uint32 = 1 << iota // queued for the next last-used flush
	stateRemoved                    // deleted from the index; do not flush
)

func (e *tokenEntry) tokenKind() TokenKind { return kindOf(e.kind) }

func (e *tokenEntry) isRemoved() bool { return e.state.Load()&stateRemoved != 0 }

func (e *tokenEntry) markRemoved() { e.state.Or(stateRemoved) }

// setDirty sets the dirty bit and reports whether it was clear.
func (e *tokenEntry) setDirty() bool { return e.state.Or(stateDirty)&stateDirty == 0 }

func (e *tokenEntry) clearDirty() { e.state.And(^stateDirty) }

// identityMeta is the placeholder map of an entry for one admin state.
type identityMeta struct {
	admin bool
	m     map[string]string
}

// end is when the entry stops being active: its expiry or its revocation.
func (e *tokenEntry) end() int64 {
	if r := e.revoked.Load(); r != 0 && r < e.expires {
		return r
	}
	return e.expires
}

func newIndex() *index {
	idx := &index{users: map[string]*userState{}}
	for i := range idx.shards {
		idx.shards[i].m = map[SecretHash]*tokenEntry{}
	}
	return idx
}

func (idx *index) shardFor(h SecretHash) *shard { return &idx.shards[h[0]] }

func (idx *index) lookup(h SecretHash) *tokenEntry {
	sh := idx.shardFor(h)
	sh.mu.RLock()
	e := sh.m[h]
	sh.mu.RUnlock()
	return e
}

// add puts e in the index and counts it if it is active at now.
func (idx *index) add(e *tokenEntry, now int64) {
	sh := idx.shardFor(e.hash)
	sh.mu.Lock()
	sh.m[e.hash] = e
	sh.mu.Unlock()
	idx.countMu.Lock()
	idx.count(e, now)
	idx.countMu.Unlock()
}

// count adds e to the live counts if active; countMu must be held.
func (idx *index) count(e *tokenEntry, now int64) {
	if end := e.end(); end > now && !e.counted {
		e.counted = true
		idx.live[e.kind]++
		idx.ends.push(endItem{end, e})
	}
}

// remove takes e out of the index; Verify no longer finds it.
func (idx *index) remove(e *tokenEntry) {
	e.markRemoved()
	sh := idx.shardFor(e.hash)
	sh.mu.Lock()
	if sh.m[e.hash] == e {
		delete(sh.m, e.hash)
	}
	sh.mu.Unlock()
	idx.countMu.Lock()
	idx.uncount(e)
	idx.countMu.Unlock()
}

func (idx *index) uncount(e *tokenEntry) {
	if e.counted {
		e.counted = false
		idx.live[e.kind]--
	}
}

// revoke sets e's revocation time and re-files it in the expiry order.
func (idx *index) revoke(e *tokenEntry, at, now int64) {
	e.revoked.Store(at)
	idx.countMu.Lock()
	idx.uncount(e)
	idx.count(e, now)
	idx.countMu.Unlock()
}

// sweep stops counting tokens that are no longer active at now and drops
// expired temporary tokens from memory (their records expire on disk by
// TTL). The heap makes this O(log n) per token that ended, O(1) otherwise.
func (idx *index) sweep(now time.Time) {
	n := now.UnixNano()
	var gone []*tokenEntry
	idx.countMu.Lock()
	for len(idx.ends) > 0 && idx.ends[0].end <= n {
		it := idx.ends.pop()
		e := it.e
		if !e.counted || it.end != e.end() {
			continue // deleted, or re-filed under a new end
		}
		e.counted = false
		idx.live[e.kind]--
		if e.kind == kindByteTemporary && e.expires <= n {
			gone = append(gone, e)
		}
	}
	idx.countMu.Unlock()
	for _, e := range gone {
		e.markRemoved()
		sh := idx.shardFor(e.hash)
		sh.mu.Lock()
		if sh.m[e.hash] == e {
			delete(sh.m, e.hash)
		}
		sh.mu.Unlock()
	}
}

// counts returns the active tokens by kind at now.
func (idx *index) counts(now time.Time) map[TokenKind]int {
	idx.sweep(now)
	idx.countMu.Lock()
	defer idx.countMu.Unlock()
	return map[TokenKind]int{
		Temporary: idx.live[kindByteTemporary],
		Permanent: idx.live[kindBytePermanent],
	}
}

// markUsed records a use at now. It writes the shared entry at most once a
// second, so a hot token does not bounce its cache line between cores on
// every request, and queues the entry for the next flush once per flush.
func (idx *index) markUsed(e *tokenEntry, now int64) {
	if now-e.lastUsed.Load() < int64(time.Second) {
		return
	}
	e.lastUsed.Store(now)
	if e.setDirty() {
		idx.dirtyMu.Lock()
		idx.dirty = append(idx.dirty, e)
		idx.dirtyMu.Unlock()
	}
}

// requeue puts entries whose flush failed back in the queue.
func (idx *index) requeue(entries []*tokenEntry) {
	idx.dirtyMu.Lock()
	defer idx.dirtyMu.Unlock()
	for _, e := range entries {
		e.setDirty()
		idx.dirty = append(idx.dirty, e)
	}
}

// takeDirty returns and clears the entries waiting for a flush.
func (idx *index) takeDirty() []*tokenEntry {
	idx.dirtyMu.Lock()
	defer idx.dirtyMu.Unlock()
	d := idx.dirty
	idx.dirty = nil
	return d
}

// Verify checks a bearer secret against the index. It does not allocate
// (except once per token and admin state, for the placeholder map) and
// never touches the disk.
func (s *Badger) Verify(secret string) (Identity, VerifyResult) {
	if secret == "" {
		return Identity{}, ResultMissing
	}
	if _, ok := ParseSecret(secret); !ok {
		return Identity{}, ResultMalformed
	}
	e := s.idx.lookup(HashSecret(secret))
	if e == nil {
		return Identity{}, ResultUnknown
	}
	flags := e.user.flags.Load()
	if flags&flagDeleted != 0 {
		return Identity{}, ResultUnknown
	}
	now := s.clock.Now().UnixNano()
	if r := e.revoked.Load(); r != 0 && now >= r {
		return Identity{}, ResultRevoked
	}
	if now >= e.expires {
		return Identity{}, ResultExpired
	}
	if flags&flagDisabled != 0 {
		return Identity{}, ResultDisabled
	}
	admin := flags&flagAdmin != 0
	s.idx.markUsed(e, now)
	return Identity{
		Username: e.user.name,
		TokenID:  e.id,
		Kind:     e.tokenKind(),
		Admin:    admin,
		Metadata: e.metadata(admin),
	}, ResultOK
}

// metadata returns the shared placeholder map for the given admin state,
// building it on first use and again when the user's admin flag changes.
func (e *tokenEntry) metadata(admin bool) map[string]string {
	if m := e.meta.Load(); m != nil && m.admin == admin {
		return m.m
	}
	m := &identityMeta{admin: admin, m: map[string]string{
		"token_id":   e.id,
		"token_kind": string(e.tokenKind()),
		"admin":      strconv.FormatBool(admin),
	}}
	e.meta.Store(m)
	return m.m
}

// endItem and endHeap are a min-heap of entries by end time, written out
// so pushes do not box values in interfaces.
type endItem struct {
	end int64
	e   *tokenEntry
}

type endHeap []endItem

func (h *endHeap) push(it endItem) {
	*h = append(*h, it)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].end <= s[i].end {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *endHeap) pop() endItem {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = endItem{}
	s = s[:last]
	h.down(s, 0)
	*h = s
	return top
}

func (*endHeap) down(s endHeap, i int) {
	for {
		l := 2*i + 1
		if l >= len(s) {
			return
		}
		m := l
		if r := l + 1; r < len(s) && s[r].end < s[l].end {
			m = r
		}
		if s[i].end <= s[m].end {
			return
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
}

// init orders a heap built by appending, in O(n).
func (h *endHeap) init() {
	s := *h
	for i := len(s)/2 - 1; i >= 0; i-- {
		h.down(s, i)
	}
}
