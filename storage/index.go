package storage

import (
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// The index is the in-memory view of the tokens that Verify reads (all of
// them, except temporary ones once they have expired). It is built from a
// snapshot of the token records when the change feed resets (at open, and
// when a node reloads) and changed by the feed's Apply after that, so it is
// never ahead of the database, and never behind a mutation that returned
// on this node (the backend applies a change before Update returns).
//
// It holds no pointers per token: a token is a numbered slot in a
// chunkedTable, found through hash -> slot maps split into shards (so
// readers on different cores rarely touch the same lock), and its user is
// a number too. The garbage collector therefore never scans a million
// tokens: with a pointer per field, marking the index took most of each
// GC cycle and cost the gateway about a tenth of its throughput.
//
// Slot lifecycle, and why reading a slot is safe: a slot is allocated and
// filled under writeMu (or by the loader, before the index is in use),
// put in its shard's map, and only released after being deleted from that
// map under the shard's write lock. Verify reads a slot while holding the
// shard's read lock and finding it in the map, so the slot cannot be
// released, let alone reused, under it. The hot table reads a slot with
// no lock, only its atomic fields, and checks the slot's generation before
// and after. Holders of a bare slot number (the expiry heap, the last-use
// queue) compare the slot's generation, which release increments under
// countMu; the last-use flush also holds writeMu while it reads, so a slot
// it checked is not refilled meanwhile.
type index struct {
	// hot finds the tokens in use by their secret; first, so that its
	// seed is on the line the index's address points to.
	hot hotTable

	// writeMu serializes every structural change: the feed's Apply, the
	// sweep's removals and the last-use flush's reads.
	writeMu sync.Mutex

	shards [numShards]shard
	slots  chunkedTable[tokenSlot]
	users  userTable

	// live counts active tokens by kind; ends orders the counted tokens by
	// the time they stop being active, so expiry is subtracted lazily.
	countMu sync.Mutex
	live    [3]int // by kind byte
	ends    endHeap

	// dirty lists the slots whose last use changed since the last flush.
	dirtyMu sync.Mutex
	dirty   []slotRef

	annotate func(Identity) any // Options.Annotate
}

const numShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[secret.Hash]uint32 // hash -> slot number
	// identities caches the Identity strings and placeholder map of the
	// tokens in use, by slot, so a request allocates nothing; entries
	// idle for identityIdle are pruned, so only tokens in use cost
	// pointers the GC scans.
	identities map[uint32]*identity
	_          [64 - 40]byte // keep shards on separate cache lines
}

// identityIdle is how long an unused token's cached identity is kept.
const identityIdle = 10 * time.Minute

// identity is what Verify returns for a token, for one admin state of its
// user.
type identity struct {
	admin      bool
	id         string
	metadata   map[string]string
	annotation any
}

// tokenSlot is one token in memory, 96 bytes without a pointer. Only
// revoked, lastUsed, dirty and gen change while a token occupies it;
// counted is guarded by index.countMu.
type tokenSlot struct {
	hash     secret.Hash
	id       [tokenIDLen]byte
	expires  int64        // unix nanoseconds
	revoked  atomic.Int64 // unix nanoseconds; 0 = not revoked
	lastUsed atomic.Int64 // unix nanoseconds; 0 = never used since open
	user     uint32       // number in index.users
	gen      atomic.Uint32
	dirty    atomic.Bool // queued for the next last-use flush
	kind     byte        // kindByteTemporary or kindBytePermanent
	counted  bool        // in index.live
}

// tokenIDLen is the length of the ids NewTokenID makes; the index stores
// ids inline at that size.
const tokenIDLen = len("tok_") + 20

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

// userTable numbers the users for the slots. Every method runs under
// index.writeMu (or in the loader), except at, which Verify calls for a number it found in a slot
// (published after the user's entry, so no lock is needed).
type userTable struct {
	byName map[string]*userState
	byNum  chunkedTable[atomic.Pointer[userState]]
}

// userState is shared by all of a user's tokens, so disabling or promoting
// a user is one atomic store that the very next Verify sees.
type userState struct {
	name  string
	num   uint32
	flags atomic.Uint32
}

const (
	flagAdmin uint32 = 1 << iota
	flagDisabled
	// flagDeleted marks a deleted user (deletedUser) whose tokens are
	// still being purged: they verify as unknown, as they will once
	// purged.
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

// put adds a user under a new number.
func (t *userTable) put(u User) *userState {
	st := &userState{name: u.Username, num: t.byNum.alloc()}
	st.flags.Store(userFlags(u))
	t.byNum.at(st.num).Store(st)
	t.byName[u.Username] = st
	return st
}

// forget drops a deleted user's name. Its number is not reused: it
// points at a deleted state from now on, so the user's tokens, which stay
// in the index until the purge's changes remove them, verify as unknown,
// and a user created again under the name gets a new number.
func (t *userTable) forget(name string) {
	if st := t.byName[name]; st != nil {
		st.flags.Store(flagDeleted) // for hot entries, which hold the state itself
		t.byNum.at(st.num).Store(deletedUser)
		delete(t.byName, name)
	}
}

var deletedUser = func() *userState {
	st := &userState{}
	st.flags.Store(flagDeleted)
	return st
}()

func (t *userTable) at(num uint32) *userState { return t.byNum.at(num).Load() }

func newIndex(annotate func(Identity) any) *index {
	idx := &index{users: userTable{byName: map[string]*userState{}}, annotate: annotate}
	idx.hot.seed = maphash.MakeSeed()
	idx.sizeShards(0)
	return idx
}

// sizeShards makes empty shard maps sized for about n tokens in total.
func (idx *index) sizeShards(n int) {
	for i := range idx.shards {
		idx.shards[i].m = make(map[secret.Hash]uint32, n/numShards)
		idx.shards[i].identities = map[uint32]*identity{}
	}
}

func (idx *index) shardFor(h secret.Hash) *shard { return &idx.shards[h[0]] }

// tokenFields is what the index keeps of a token record.
type tokenFields struct {
	hash             secret.Hash
	id               []byte
	user             *userState
	kind             byte
	expires, revoked int64
}

// add puts a token in the index and counts it if it is active at now.
// The caller holds writeMu.
func (idx *index) add(f tokenFields, now int64) {
	i := idx.place(f)
	idx.countMu.Lock()
	idx.count(i, idx.slots.at(i), now)
	idx.countMu.Unlock()
}

// place fills a free slot with a token and makes it findable; the caller
// holds writeMu or is the loader, and counts it.
func (idx *index) place(f tokenFields) uint32 {
	i := idx.slots.alloc()
	e := idx.slots.at(i)
	e.hash, e.user, e.kind, e.expires = f.hash, f.user.num, f.kind, f.expires
	copy(e.id[:], f.id)
	e.revoked.Store(f.revoked)
	e.lastUsed.Store(0)
	e.dirty.Store(false)
	sh := idx.shardFor(f.hash)
	sh.mu.Lock()
	sh.m[f.hash] = i
	sh.mu.Unlock()
	return i
}

// count adds a slot to the live counts if it is active; countMu must be
// held.
func (idx *index) count(i uint32, e *tokenSlot, now int64) {
	if end := e.end(); end > now && !e.counted {
		e.counted = true
		idx.live[e.kind]++
		idx.ends.push(endItem{end, slotRef{i, e.gen.Load()}})
	}
}

func (idx *index) uncount(e *tokenSlot) {
	if e.counted {
		e.counted = false
		idx.live[e.kind]--
	}
}

// lookup returns the slot of the token with hash h.
func (idx *index) lookup(h secret.Hash) (uint32, bool) {
	sh := idx.shardFor(h)
	sh.mu.RLock()
	i, ok := sh.m[h]
	sh.mu.RUnlock()
	return i, ok
}

// remove takes the token with hash h out of the index, if it is there,
// and frees its slot; Verify no longer finds it.
func (idx *index) remove(h secret.Hash) { idx.removeSlot(h, nil) }

// removeSlot removes h if it is in the index, and if slot is not nil only
// if it is still in *slot.
func (idx *index) removeSlot(h secret.Hash, slot *uint32) {
	sh := idx.shardFor(h)
	sh.mu.Lock()
	i, ok := sh.m[h]
	if ok && (slot == nil || *slot == i) {
		delete(sh.m, h)
		delete(sh.identities, i)
	} else {
		ok = false
	}
	sh.mu.Unlock()
	if !ok {
		return
	}
	e := idx.slots.at(i)
	idx.countMu.Lock()
	idx.uncount(e)
	e.gen.Add(1)
	idx.countMu.Unlock()
	idx.slots.release(i)
}

// revoke sets the revocation time of the token with hash h and re-files it
// in the expiry order.
func (idx *index) revoke(h secret.Hash, at, now int64) {
	sh := idx.shardFor(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.m[h]
	if !ok {
		return
	}
	e := idx.slots.at(i)
	e.revoked.Store(at)
	idx.countMu.Lock()
	idx.uncount(e)
	idx.count(i, e, now)
	idx.countMu.Unlock()
}

// lastUsedOf returns the last use this node has seen of the token with
// hash h (unix nanoseconds, 0 if none).
func (idx *index) lastUsedOf(h secret.Hash) int64 {
	sh := idx.shardFor(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.m[h]
	if !ok {
		return 0
	}
	return idx.slots.at(i).lastUsed.Load()
}

// sweep stops counting tokens that are no longer active at now and drops
// expired temporary tokens from memory (their records expire on disk by
// TTL). The heap makes this O(log n) per token that ended, O(1) otherwise.
func (idx *index) sweep(now time.Time) {
	n := now.UnixNano()
	type gone struct {
		hash secret.Hash
		slot uint32
	}
	var drop []gone
	idx.countMu.Lock()
	for len(idx.ends) > 0 && idx.ends[0].end <= n {
		it := idx.ends.pop()
		e := idx.slots.at(it.ref.slot)
		// Under countMu a slot of the same generation cannot be released.
		if e.gen.Load() != it.ref.gen || !e.counted || it.end != e.end() {
			continue // removed, or re-filed under a new end
		}
		e.counted = false
		idx.live[e.kind]--
		if e.kind == kindByteTemporary && e.expires <= n {
			drop = append(drop, gone{e.hash, it.ref.slot})
		}
	}
	idx.countMu.Unlock()
	for _, g := range drop {
		idx.removeSlot(g.hash, &g.slot)
	}
}

// pruneIdentities drops the cached identities of tokens not used for
// identityIdle, so the pointers they hold stay proportional to the tokens
// in use.
func (idx *index) pruneIdentities(now time.Time) {
	cutoff := now.Add(-identityIdle).UnixNano()
	idx.hot.prune(cutoff)
	for s := range idx.shards {
		sh := &idx.shards[s]
		sh.mu.Lock()
		for i := range sh.identities {
			if idx.slots.at(i).lastUsed.Load() < cutoff {
				delete(sh.identities, i)
			}
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

// markUsed records a use at now. It writes the slot at most once a
// second, so a hot token does not bounce its cache line between cores on
// every request, and queues the slot for the next flush once per flush.
// The caller holds the slot's shard lock.
func (idx *index) markUsed(i uint32, e *tokenSlot, now int64) {
	if now-e.lastUsed.Load() < int64(time.Second) {
		return
	}
	e.lastUsed.Store(now)
	if !e.dirty.Swap(true) {
		idx.dirtyMu.Lock()
		idx.dirty = append(idx.dirty, slotRef{i, e.gen.Load()})
		idx.dirtyMu.Unlock()
	}
}

// takeDirty returns and clears the slots waiting for a flush.
func (idx *index) takeDirty() []slotRef {
	idx.dirtyMu.Lock()
	defer idx.dirtyMu.Unlock()
	d := idx.dirty
	idx.dirty = nil
	return d
}

// requeue puts slots whose flush failed back in the queue. A slot reused
// since by another token is left out (its generation changed), and one
// reused after this check is skipped by collectUses for the same reason.
func (idx *index) requeue(refs []slotRef) {
	idx.dirtyMu.Lock()
	defer idx.dirtyMu.Unlock()
	for _, r := range refs {
		if e := idx.slots.at(r.slot); e.gen.Load() == r.gen {
			e.dirty.Store(true)
			idx.dirty = append(idx.dirty, r)
		}
	}
}

// Verify checks a bearer secret on the request hot path, against the
// in-memory index. It never touches the database, never for a malformed
// secret either, and does not allocate (except once per token and admin
// state, for the cached identity and its hot entry). A token in use is
// recognized by its secret in the hot table, without hashing it or taking
// a lock; any other case takes the shard's lock. A revocation, deletion,
// expiry or disabled user is seen by the very next call on the node that
// made the change, and on other nodes as soon as their change feed
// applies it.
func (s *Store) Verify(presented string) (Identity, VerifyResult) {
	if len(presented) == secret.Len && !s.stale.Load() {
		// A token in use is recognized by its whole secret, which passed
		// ParseSecret when it was put in the hot table.
		if e := s.idx.Load().hot.find(presented); e != nil {
			if id, ok := e.verify(s.clock.Now().UnixNano()); ok {
				return id, ResultOK
			}
		}
	}
	if presented == "" {
		return Identity{}, ResultMissing
	}
	if _, ok := secret.Parse(presented); !ok {
		return Identity{}, ResultMalformed
	}
	if s.stale.Load() {
		return Identity{}, ResultUnavailable
	}
	h := secret.HashOf(presented)
	id, r := s.idx.Load().verify(h, s.clock.Now().UnixNano(), presented)
	if r == ResultUnknown && s.shared {
		return s.verifyMiss(h)
	}
	return id, r
}

// verify decides the token with hash h at now, taking the shard's lock. A
// valid token is put in the hot table under its secret, when one is given.
func (idx *index) verify(h secret.Hash, now int64, presented string) (Identity, VerifyResult) {
	sh := idx.shardFor(h)
	sh.mu.RLock()
	i, ok := sh.m[h]
	if !ok {
		sh.mu.RUnlock()
		return Identity{}, ResultUnknown
	}
	e := idx.slots.at(i)
	user := idx.users.at(e.user)
	flags := user.flags.Load()
	if result := check(e, flags, now); result != ResultOK {
		sh.mu.RUnlock()
		return Identity{}, result
	}
	idx.markUsed(i, e, now)
	// The slot cannot change occupant while the lock is held: these are
	// this token's.
	gen, kind, expires := e.gen.Load(), e.kind, e.expires
	admin := flags&flagAdmin != 0
	id := sh.identities[i]
	sh.mu.RUnlock()
	if id == nil || id.admin != admin {
		if id = idx.cacheIdentity(sh, h, i, admin); id == nil {
			return Identity{}, ResultUnknown // deleted since the read lock
		}
	}
	if presented != "" {
		idx.hot.put(presented, &hotEntry{gen: gen, kind: kind, expires: expires, slot: e, user: user, id: id}, now)
	}
	return id.identity(user.name, kind), ResultOK
}

func (id *identity) identity(username string, kind byte) Identity {
	return Identity{
		Username:   username,
		TokenID:    id.id,
		Kind:       kindOf(kind),
		Admin:      id.admin,
		Metadata:   id.metadata,
		Annotation: id.annotation,
	}
}

// check decides a found token's fate at now from its slot and its user's
// flags.
func check(e *tokenSlot, flags uint32, now int64) VerifyResult {
	switch revoked := e.revoked.Load(); {
	case flags&flagDeleted != 0:
		return ResultUnknown
	case revoked != 0 && now >= revoked:
		return ResultRevoked
	case now >= e.expires:
		return ResultExpired
	case flags&flagDisabled != 0:
		return ResultDisabled
	}
	return ResultOK
}

// cacheIdentity builds and caches the identity of slot i (hash h) for an
// admin state; it returns nil if the token has left the index meanwhile.
func (idx *index) cacheIdentity(sh *shard, h secret.Hash, i uint32, admin bool) *identity {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if j, ok := sh.m[h]; !ok || j != i {
		return nil
	}
	if id := sh.identities[i]; id != nil && id.admin == admin {
		return id
	}
	e := idx.slots.at(i)
	tokenID := e.tokenID()
	id := &identity{admin: admin, id: tokenID, metadata: map[string]string{
		"token_id":   tokenID,
		"token_kind": string(kindOf(e.kind)),
		"admin":      strconv.FormatBool(admin),
	}}
	if idx.annotate != nil {
		id.annotation = idx.annotate(id.identity(idx.users.at(e.user).name, e.kind))
	}
	sh.identities[i] = id
	return id
}

// endItem and endHeap are a min-heap of slots by end time, written out
// so pushes do not box values in interfaces.
type endItem struct {
	end int64
	ref slotRef
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
