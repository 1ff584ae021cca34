package verifier

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// hotTable lets Verify recognize a token in use by its secret alone,
// without hashing it and without a lock. Hashing the secret (SHA-256) and
// finding its slot through a shard's map under the shard's read lock cost
// a request more than everything else the gateway does for it; a
// gateway's traffic comes from few tokens, each used many times a second,
// so most requests can skip both.
//
// An entry binds a secret, held as it was presented, to the slot and the
// generation its hash was found in by the locked path. A hit is confirmed
// by comparing the whole secret in constant time, and then decided by
// decide from the slot and the user as they are now, read atomically: a
// revocation, a deletion (the slot's generation changes), an expiry, a
// disabled, deleted or demoted user are seen by the very next request,
// exactly as on the locked path. A use that is due a last-use write (once
// a second per token) takes the locked path, which records it.
//
// The secrets of tokens in use are therefore in memory, as the requests
// carrying them are; they are never written anywhere, and an entry idle
// for idleAfter, or whose token left the table, is dropped by pruneIdle.
// Only a token the locked path found is ever put in the table, so a flood
// of garbage or unknown tokens can neither fill nor evict it.
type hotTable struct {
	seed    maphash.Seed // random per table: bucket occupancy says nothing about a secret
	entries [hotEntries]atomic.Pointer[hotEntry]
}

// hotEntries is the table's size. It is two-way set-associative: a
// secret has two seats, side by side on one cache line. A seat whose token
// was used in the last hotSeatKept keeps it; a token finding both of its
// seats so kept takes the locked path (correct, only slower) until one
// frees, rather than evicting a token in use, which would make the two
// trade places, and allocate, on every request.
const (
	hotEntries  = 1 << 14
	hotWays     = 2
	hotSeatKept = 2 * time.Second // markUsed writes a token in use at least once a second
)

// hotEntry is immutable once published.
type hotEntry struct {
	secret  [secret.Len]byte
	gen     uint32 // the slot's generation when its hash was found there
	kind    byte
	expires int64
	slot    *tokenSlot
	user    *userState // flagDeleted is set on it when the user is deleted
	tokenID string
	hash    secret.Hash
}

// set returns the seats of a secret.
func (t *hotTable) set(presented string) *[hotWays]atomic.Pointer[hotEntry] {
	i := maphash.String(t.seed, presented) % (hotEntries / hotWays) * hotWays
	return (*[hotWays]atomic.Pointer[hotEntry])(t.entries[i : i+hotWays])
}

// find returns the entry held for a secret, or nil. The secret's length
// has been checked: secret.Len, as every held secret's.
func (t *hotTable) find(presented string) *hotEntry {
	set := t.set(presented)
	for i := range set {
		if e := set[i].Load(); e != nil && sameSecret(&e.secret, presented) {
			return e
		}
	}
	return nil
}

// decide decides the entry's token at now for a route with policy p and
// a request from client, as the locked path would. It reports false when
// the locked path must decide instead: the slot no longer holds the token
// the entry was made for, or the token passes and its use is due to be
// recorded (a second since the last, or a scope its uses have not needed
// since the last flush).
func (e *hotEntry) decide(g *grants, now int64, p *Policy, client netip.Addr) (Identity, Result, bool) {
	slot := e.slot
	if slot.gen.Load() != e.gen {
		return Identity{}, 0, false
	}
	s := state{expires: e.expires, revoked: slot.revoked.Load()}
	scopes, networks := slot.scopes.Load(), slot.networks.Load()
	lastUsed := slot.lastUsed.Load()
	used, missing := slot.usedScopes.Load(), slot.missingScopes.Load()
	// A slot's generation changes before it is refilled, so if it is
	// unchanged now, the reads above were of this token.
	if slot.gen.Load() != e.gen {
		return Identity{}, 0, false
	}
	s.userFlags = e.user.flags.Load()
	s.inNetwork = g.allows(networks, client)
	s.effective = effectiveScopes(scopes, e.user.scopes.Load(), s.userFlags)
	r := decide(&s, p, now)
	if r != ResultOK && !r.RefusedByRoute() {
		return Identity{}, r, true
	}
	if u := usageOf(&s, p, r); now-lastUsed >= int64(time.Second) || // markUsed's pace
		u.needed&^used != 0 || u.missing&^missing != 0 {
		return Identity{}, 0, false
	}
	return Identity{Username: e.user.name, TokenID: e.tokenID, Kind: kindOf(e.kind), Admin: s.userFlags&flagAdmin != 0, Scopes: s.effective, Hash: e.hash}, r, true
}

// sameSecret compares in constant time, eight bytes at a time: the
// differences are ORed together and only the result is tested, so the time
// taken says nothing about where the two differ. (crypto/subtle compares
// a byte at a time, a tenth of a gateway's own work per request.) The
// string is viewed in place: converting it to []byte would copy it to the
// heap on every request.
func sameSecret(held *[secret.Len]byte, presented string) bool {
	if len(presented) != secret.Len { // every secret's length: it tells nothing
		return false
	}
	p := (*[secret.Len]byte)(unsafe.Pointer(unsafe.StringData(presented)))
	var diff uint64
	for i := 0; i < secret.Len; i += 8 {
		diff |= binary.LittleEndian.Uint64(held[i:]) ^ binary.LittleEndian.Uint64(p[i:])
	}
	return diff == 0
}

// A secret is a whole number of words, so sameSecret reads every byte.
var _ = [1]struct{}{}[secret.Len%8]

// put records a token the locked path has just found at now, described by
// e (all but its secret). It allocates only when it takes a seat: a token
// in use is put again once a second (with its last-use write) and finds
// itself seated.
func (t *hotTable) put(presented string, e *hotEntry, now int64) {
	set := t.set(presented)
	var free *atomic.Pointer[hotEntry]
	var held *hotEntry
	for i := range set {
		cur := set[i].Load()
		if cur != nil && cur.slot == e.slot && cur.gen == e.gen {
			return // seated already
		}
		if free == nil && !cur.keepsSeat(now) {
			free, held = &set[i], cur
		}
	}
	if free == nil {
		return // both seats taken by tokens in use
	}
	fresh := *e
	copy(fresh.secret[:], presented)
	free.CompareAndSwap(held, &fresh) // lost to another put: that one sits
}

// keepsSeat reports whether an entry's token is still in the table and
// was used within hotSeatKept of now.
func (e *hotEntry) keepsSeat(now int64) bool {
	return e != nil && e.slot.gen.Load() == e.gen && now-e.slot.lastUsed.Load() < int64(hotSeatKept)
}

// prune drops the entries of tokens that left the table or were not used
// since cutoff (unix nanoseconds), so the secrets held are those of
// tokens in use.
func (t *hotTable) prune(cutoff int64) {
	for i := range t.entries {
		b := &t.entries[i]
		e := b.Load()
		if e == nil {
			continue
		}
		if e.slot.gen.Load() != e.gen || e.slot.lastUsed.Load() < cutoff {
			b.CompareAndSwap(e, nil)
		}
	}
}
