package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// Hooks and key names for the external tests (package storage_test), which
// cannot import this package's internals otherwise.

// SetPurgeBatch sets how many keys a batched purge handles per
// transaction and returns a function that restores the old value.
func SetPurgeBatch(n int) (restore func()) {
	old := purgeBatch
	purgeBatch = n
	return func() { purgeBatch = old }
}

// SetPurgeHook makes fn run before each batch of a batched purge.
func (s *Store) SetPurgeHook(fn func()) { s.purgeHook = fn }

// Key layout, for tests that inspect what is stored.
var (
	UserKey        = userKey
	DeletedUserKey = deletedUserKey

	ExpiryKey       = expiryKey
	LastUsedKey     = lastUsedKey
	KeyExpiryCopies = keyExpiryCopies
	KeyListIndex    = keyListIndex
)

const (
	PrefixToken     = prefixToken
	PrefixExpiry    = prefixExpiry
	PrefixUserToken = prefixUserToken
	PrefixName      = prefixName

	PrefixCreatedPerm = prefixCreatedPerm
	PrefixCreatedTemp = prefixCreatedTemp
	PrefixExpiryTemp  = prefixExpiryTemp
)

// DecodeTokenRecord decodes a stored token record.
func DecodeTokenRecord(b []byte) (Token, SecretHash, error) {
	r, err := unmarshalToken(b)
	return r.Token, r.Hash, err
}

// DecodeUserRecord decodes a stored user record and its password hash.
func DecodeUserRecord(b []byte) (User, []byte, error) {
	var r userRecord
	err := json.Unmarshal(b, &r)
	return r.User, r.PasswordHash, err
}

// MaxBatch is the largest batch CreateTokens takes.
const MaxBatch = maxBatch

// PurgeBatch is how many keys a batched purge handles per transaction.
func PurgeBatch() int { return purgeBatch }

// InIndex reports whether the token with this secret is in the in-memory
// index.
func (s *Store) InIndex(secret string) bool {
	_, found := s.idx.Load().lookup(HashSecret(secret))
	return found
}

// SlotOf returns the index slot of the token with this secret.
func (s *Store) SlotOf(secret string) (uint32, bool) {
	return s.idx.Load().lookup(HashSecret(secret))
}

// FlushLastUsed writes the batched last uses now.
func (s *Store) FlushLastUsed() { s.flushLastUsed(context.Background()) }

// CachedIdentities counts the identities the index holds.
func (s *Store) CachedIdentities() int {
	idx := s.idx.Load()
	n := 0
	for i := range idx.shards {
		sh := &idx.shards[i]
		sh.mu.RLock()
		n += len(sh.identities)
		sh.mu.RUnlock()
	}
	return n
}

// PruneIdentities drops the identities idle at now.
func (s *Store) PruneIdentities(now time.Time) { s.idx.Load().pruneIdentities(now) }

// IdentityIdle is how long an unused identity is kept.
const IdentityIdle = identityIdle

// UserNumber returns the index's number for a user name.
func (s *Store) UserNumber(name string) (uint32, bool) {
	idx := s.idx.Load()
	idx.writeMu.Lock()
	defer idx.writeMu.Unlock()
	st := idx.users.byName[name]
	if st == nil {
		return 0, false
	}
	return st.num, true
}

// UserNumberDeleted reports whether a user number points at a deleted user.
func (s *Store) UserNumberDeleted(num uint32) bool {
	return s.idx.Load().users.at(num).flags.Load()&flagDeleted != 0
}

// SyntheticRecord is a permanent token record of user with a filler hash
// that is no secret's, and the key it is stored under.
func SyntheticRecord(user string, i int, created, expires time.Time) (key string, val []byte) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	hash := SecretHash(sha256.Sum256(b[:]))
	binary.BigEndian.PutUint64(b[:], uint64(-1-i))
	idHash := sha256.Sum256(b[:])
	rec := tokenRecord{Hash: hash, Token: Token{
		ID: fmt.Sprintf("tok_%x", idHash[:10]), User: user, Name: fmt.Sprintf("token %d", i), Kind: Permanent,
		CreatedAt: created, CreatedBy: "bench", ExpiresAt: expires,
	}}
	return tokenKey(rec.ID), rec.marshal()
}

// IsHot reports whether Verify would answer secret from the hot table now,
// without the index's lock.
func (s *Store) IsHot(secret string) bool {
	e := s.idx.Load().hot.find(secret)
	if e == nil {
		return false
	}
	_, ok := e.verify(s.clock.Now().UnixNano())
	return ok
}

// HoldsSecret reports whether the hot table holds secret at all.
func (s *Store) HoldsSecret(secret string) bool {
	return len(secret) == SecretLen && s.idx.Load().hot.find(secret) != nil
}
