package storage

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Hooks and key names for the external tests (package storage_test), which
// cannot import this package's internals otherwise.

// SetPurgeHook makes fn run before each batch of a batched purge.
func (s *Store) SetPurgeHook(fn func()) { s.purgeHook = fn }

// Key layout, for tests that inspect what is stored.
var (
	UserKey        = userKey
	DeletedUserKey = deletedUserKey

	ExpiryKey   = expiryKey
	LastUsedKey = lastUsedKey
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
func DecodeTokenRecord(b []byte) (Token, secret.Hash, error) {
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

// Verify verifies presented for a route that asks nothing more of a
// token, as the admin API does for its callers.
func (s *Store) Verify(presented string) (verifier.Identity, verifier.Result) {
	return s.tokens.Verify(presented, nil)
}

// FlushLastUsed writes the batched last uses now.
func (s *Store) FlushLastUsed() { s.flushLastUsed(context.Background()) }

// SyntheticRecord is a permanent token record of user with a filler hash
// that is no secret's, and the key it is stored under.
func SyntheticRecord(user string, i int, created, expires time.Time) (key string, val []byte) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	hash := secret.Hash(sha256.Sum256(b[:]))
	binary.BigEndian.PutUint64(b[:], uint64(-1-i))
	idHash := sha256.Sum256(b[:])
	rec := tokenRecord{Hash: hash, Token: Token{
		ID: fmt.Sprintf("tok_%x", idHash[:10]), User: user, Name: fmt.Sprintf("token %d", i), Kind: Permanent,
		CreatedAt: created, CreatedBy: "bench", ExpiresAt: expires,
	}}
	return tokenKey(rec.ID), rec.marshal()
}

// Reads that only tests need, over the paged API and the same rules.

// Backend returns the backend the store runs on.
func (s *Store) Backend() kv.Backend { return s.db }

// TokenKey is the key of a token's record.
func TokenKey(id string) string { return tokenKey(id) }

// ListUsers returns every user, ordered by username.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	return allPages(func(cursor string) ([]User, string, error) {
		return s.ListUsersPage(ctx, cursor, MaxPageLimit)
	})
}

// ListUserTokens returns every token of a user, oldest first.
func (s *Store) ListUserTokens(ctx context.Context, name string) ([]Token, error) {
	return allPages(func(cursor string) ([]Token, string, error) {
		return s.ListUserTokensPage(ctx, name, cursor, MaxPageLimit)
	})
}

// ListTokens returns every token that passes f, in the order of
// ListTokensPage.
func (s *Store) ListTokens(ctx context.Context, f TokenFilter) ([]Token, error) {
	return allPages(func(cursor string) ([]Token, string, error) {
		return s.ListTokensPage(ctx, f, cursor, MaxPageLimit)
	})
}

// ListAudit returns up to limit entries, newest first.
func (s *Store) ListAudit(ctx context.Context, limit int) ([]AuditEntry, error) {
	out, _, err := s.ListAuditPage(ctx, "", limit)
	return out, err
}

// GetToken returns a token's metadata.
func (s *Store) GetToken(ctx context.Context, id string) (Token, error) {
	var t Token
	err := s.view(ctx, func(r kv.Reader) error {
		rec, found, err := newLiveTokens(r, s.clock.Now()).get(id)
		if err != nil {
			return err
		}
		if !found {
			return tokenNotFound(id)
		}
		views, err := s.tokenViews(r, []tokenRecord{rec}, s.clock.Now())
		if err != nil {
			return err
		}
		t = views[0]
		return nil
	})
	return t, err
}

// GetAlertState returns what the alert loop stored for a token.
func (s *Store) GetAlertState(ctx context.Context, tokenID string) (AlertState, bool, error) {
	states, err := s.Alerting().GetAlertStates(ctx, []string{tokenID})
	st, found := states[tokenID]
	return st, found, err
}

// allPages walks a list from its first page to its last and returns every
// item, for callers that want a whole list at once (tests, tools). The
// admin API serves pages instead, so a big list never sits in memory.
func allPages[T any](page func(cursor string) ([]T, string, error)) ([]T, error) {
	all := []T{}
	cursor := ""
	for {
		items, next, err := page(cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}
