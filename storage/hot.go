package storage

import (
	"crypto/subtle"
	"hash/maphash"
	"sync/atomic"
	"time"
	"unsafe"
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
// by comparing the whole secret in constant time, and then decided from
// the slot and the user as they are now, read atomically: a revocation,
// a deletion (the slot's generation changes), an expiry, a disabled,
// deleted or promoted user are seen by the very next request, exactly as
// on the locked path. Only a plain "valid" is answered here; anything else,
// and every use that is due a last-use write (once a second per token),
// takes the locked path, which is the one authority for refusals.
//
// The secrets of tokens in use are therefore in memory, as the requests
// carrying them are; they are never written anywhere, and an entry idle for
// identityIdle, or whose token left the index, is dropped by
// pruneIdentities. Only a verified token is ever put in the table, so a
// flood of garbage or unknown tokens can neither fill nor evict it.
type hotTable struct {
	seed    maphash.Seed // random per table: bucket occupancy says nothing about a secret
	entries [hotEntries]atomic.Pointer[hotEntry]
}

// hotEntries is the table's size. It is direct-mapped: two tokens in use
// that fall in one bucket take turns in it, and the one that is out takes
// the locked path, which is correct, only slower.
const hotEntries = 1 << 14

// hotEntry is immutable once published.
type hotEntry struct {
	secret  [SecretLen]byte
	gen     uint32 // the slot's generation when its hash was found there
	kind    byte
	expires int64
	slot    *tokenSlot
	user    *userState // flagDeleted is set on it when the user is deleted
	id      *identity
}

func (t *hotTable) bucket(secret string) *atomic.Pointer[hotEntry] {
	return &t.entries[maphash.String(t.seed, secret)%hotEntries]
}

// find returns the entry held for secret, or nil. The secret's length
// has been checked: SecretLen, as every held secret's.
func (t *hotTable) find(secret string) *hotEntry {
	e := t.bucket(secret).Load()
	if e == nil || !sameSecret(&e.secret, secret) {
		return nil
	}
	return e
}

// verify returns the token's identity if it is valid at now, and false
// when the locked path must decide: the entry cannot say "valid" now.
func (e *hotEntry) verify(now int64) (Identity, bool) {
	slot := e.slot
	if slot.gen.Load() != e.gen {
		return Identity{}, false
	}
	revoked := slot.revoked.Load()
	lastUsed := slot.lastUsed.Load()
	// A slot's generation changes before it is refilled, so if it is
	// unchanged now, the two reads above were of this token.
	if slot.gen.Load() != e.gen {
		return Identity{}, false
	}
	flags := e.user.flags.Load()
	switch {
	case flags&(flagDeleted|flagDisabled) != 0,
		revoked != 0 && now >= revoked,
		now >= e.expires,
		(flags&flagAdmin != 0) != e.id.admin,
		now-lastUsed >= int64(time.Second): // markUsed's pace: the locked path records the use
		return Identity{}, false
	}
	return e.id.identity(e.user.name, e.kind), true
}

// sameSecret compares in constant time. The string is viewed in place:
// converting it to []byte would copy it to the heap on every request.
func sameSecret(held *[SecretLen]byte, secret string) bool {
	presented := unsafe.Slice(unsafe.StringData(secret), len(secret))
	return subtle.ConstantTimeCompare(held[:], presented) == 1
}

// put records a token the locked path has just found valid, described by
// e (all but its secret). It allocates only when the bucket holds
// something else: a token in use is put again once a second (with its
// last-use write) and finds itself there.
func (t *hotTable) put(secret string, e *hotEntry) {
	b := t.bucket(secret)
	if cur := b.Load(); cur != nil && cur.slot == e.slot && cur.gen == e.gen && cur.id == e.id {
		return
	}
	fresh := *e
	copy(fresh.secret[:], secret)
	b.Store(&fresh)
}

// prune drops the entries of tokens that left the index or were not used
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
