package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// flushChunk bounds the last-use updates written per transaction.
const flushChunk = 1000

// flushLastUsed writes the last uses the verifier saw, a chunk per
// transaction; what could not be written is kept for the next flush.
func (s *Store) flushLastUsed(ctx context.Context) {
	if err := s.tokens.FlushUses(flushChunk, func(uses []verifier.Use) error { return s.writeLastUses(ctx, uses) }); err != nil {
		s.log.Warn("could not save last-used times; will retry", zap.Error(err))
	}
}

// writeLastUses writes one chunk. Several nodes may flush the same token,
// so each write keeps the later of the stored time and this node's. A
// token deleted meanwhile is skipped, so no orphan lu/ key is left behind.
func (s *Store) writeLastUses(ctx context.Context, uses []verifier.Use) error {
	if len(uses) == 0 {
		return nil
	}
	return s.update(ctx, func(w *writeTxn) error {
		tokenKeys := make([]string, len(uses))
		useKeys := make([]string, len(uses))
		for i, u := range uses {
			tokenKeys[i], useKeys[i] = tokenKey(u.TokenID), lastUsedKey(u.TokenID)
		}
		live := make([]bool, len(uses))
		if err := w.GetMany(tokenKeys, func(i int, _ []byte) error { live[i] = true; return nil }); err != nil {
			return fmt.Errorf("storage: read tokens: %w", err)
		}
		stored := make([]int64, len(uses))
		if err := w.GetMany(useKeys, func(i int, v []byte) error {
			if len(v) == 8 {
				stored[i] = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("storage: read last use: %w", err)
		}
		for i, u := range uses {
			if !live[i] || stored[i] >= u.At.UnixNano() {
				continue
			}
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], uint64(u.At.UnixNano()))
			var ttl time.Duration
			if u.Kind == Temporary {
				ttl = s.ttlUntil(u.ExpiresAt)
			}
			if err := setTTL(w, useKeys[i], v[:], ttl); err != nil {
				return err
			}
		}
		return nil
	})
}
