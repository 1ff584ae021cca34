package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
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
// so each write merges: the later of the stored time and this node's,
// with its client address, and for each scope the later time. A token
// deleted meanwhile is skipped, so no orphan lu/ key is left behind.
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
		stored := make([]storedUse, len(uses))
		if err := w.GetMany(useKeys, func(i int, v []byte) error {
			stored[i] = decodeUse(v)
			return nil
		}); err != nil {
			return fmt.Errorf("storage: read last use: %w", err)
		}
		for i, u := range uses {
			if !live[i] || !stored[i].merge(&u) {
				continue
			}
			var ttl time.Duration
			if u.Kind == Temporary {
				ttl = s.ttlUntil(u.ExpiresAt)
			}
			if err := setTTL(w, useKeys[i], stored[i].encode(), ttl); err != nil {
				return err
			}
		}
		return nil
	})
}

// storedUse is what lu/<token id> holds: the last use's time (8 bytes,
// unix nanoseconds big-endian), then, if anything more is known, JSON
// with the last use's client address and, for each scope, when a route
// last needed it and when a shadow route last found it missing.
type storedUse struct {
	at      int64
	IP      string           `json:"ip,omitempty"`
	Needed  map[string]int64 `json:"needed,omitempty"`
	Missing map[string]int64 `json:"missing,omitempty"`
}

// decodeUse reads a stored use; a corrupt one reads as none, as it is
// best effort.
func decodeUse(v []byte) storedUse {
	var u storedUse
	if len(v) < 8 {
		return u
	}
	if len(v) > 8 && json.Unmarshal(v[8:], &u) != nil {
		u = storedUse{}
	}
	u.at = int64(binary.BigEndian.Uint64(v))
	return u
}

func (u *storedUse) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(u.at))
	if u.IP == "" && len(u.Needed) == 0 && len(u.Missing) == 0 {
		return b
	}
	rest, _ := json.Marshal(u) // strings and integers always encode
	return append(b, rest...)
}

// merge adds what a node saw, the later time winning everywhere, and
// reports whether anything changed.
func (u *storedUse) merge(seen *verifier.Use) bool {
	at := seen.At.UnixNano()
	changed := false
	if at > u.at {
		u.at, changed = at, true
		if seen.ClientIP.IsValid() {
			u.IP = seen.ClientIP.Unmap().String()
		}
	}
	changed = laterFor(&u.Needed, seen.Scopes, at) || changed
	changed = laterFor(&u.Missing, seen.Missing, at) || changed
	return changed
}

// laterFor sets each name's time in *m to at if that is later.
func laterFor(m *map[string]int64, names []string, at int64) bool {
	changed := false
	for _, n := range names {
		if *m == nil {
			*m = map[string]int64{}
		}
		if at > (*m)[n] {
			(*m)[n], changed = at, true
		}
	}
	return changed
}

// scopeUsage turns a stored use's scope times into a token view's.
func (u *storedUse) scopeUsage() map[string]ScopeUse {
	if len(u.Needed) == 0 && len(u.Missing) == 0 {
		return nil
	}
	out := map[string]ScopeUse{}
	for n, at := range u.Needed {
		t := nanosTime(at)
		su := out[n]
		su.LastNeededAt = &t
		out[n] = su
	}
	for n, at := range u.Missing {
		t := nanosTime(at)
		su := out[n]
		su.LastMissingAt = &t
		out[n] = su
	}
	return out
}
