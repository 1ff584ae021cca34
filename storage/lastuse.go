package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// flushChunk bounds the last-use updates written per transaction.
const flushChunk = 1000

// lastUse is one token's use to flush.
type lastUse struct {
	id   string
	kind byte
	at   int64 // unix nanoseconds
	exp  int64 // the token's expiry, for a temporary token's TTL
}

// flushLastUsed writes the batched last-use times, a chunk per
// transaction. Several nodes may flush the same token, so each write keeps
// the later of the stored time and this node's. A token deleted meanwhile
// is skipped, so no orphan lu/ key is left behind.
func (s *Store) flushLastUsed(ctx context.Context) {
	idx := s.idx.Load()
	dirty := idx.takeDirty()
	for len(dirty) > 0 {
		n := min(len(dirty), flushChunk)
		uses := idx.collectUses(dirty[:n])
		if err := s.writeLastUses(ctx, uses); err != nil {
			s.log.Warn("could not save last-used times; will retry", zap.Int("tokens", len(dirty)), zap.Error(err))
			idx.requeue(dirty)
			return
		}
		dirty = dirty[n:]
	}
}

// collectUses reads the uses of the slots in refs that still hold the
// token they were queued for. It holds writeMu, so no slot is refilled
// with another token while it reads.
func (idx *index) collectUses(refs []slotRef) []lastUse {
	idx.writeMu.Lock()
	defer idx.writeMu.Unlock()
	uses := make([]lastUse, 0, len(refs))
	for _, r := range refs {
		e := idx.slots.at(r.slot)
		if e.gen.Load() != r.gen {
			continue // deleted; the slot may hold another token now
		}
		e.dirty.Store(false) // before reading, so a later use re-queues it
		uses = append(uses, lastUse{id: e.tokenID(), kind: e.kind, at: e.lastUsed.Load(), exp: e.expires})
	}
	return uses
}

func (s *Store) writeLastUses(ctx context.Context, uses []lastUse) error {
	if len(uses) == 0 {
		return nil
	}
	return s.update(ctx, func(w *writeTxn) error {
		tokenKeys := make([]string, len(uses))
		useKeys := make([]string, len(uses))
		for i, u := range uses {
			tokenKeys[i], useKeys[i] = tokenKey(u.id), lastUsedKey(u.id)
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
			if !live[i] || stored[i] >= u.at {
				continue
			}
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], uint64(u.at))
			var ttl time.Duration
			if u.kind == kindByteTemporary {
				ttl = s.ttlUntil(nanosTime(u.exp))
			}
			if err := setTTL(w, useKeys[i], v[:], ttl); err != nil {
				return err
			}
		}
		return nil
	})
}
