package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Alerting is the part of the store that the alert loop uses, and the
// only one it sees: the alert lease, the walk over permanent tokens in
// expiry order, what the loop remembers per token, the view of its last
// pass that every node shows, and the figures its metrics report.
type Alerting struct{ s *Store }

// Alerting returns the store's surface for the alert loop.
func (s *Store) Alerting() Alerting { return Alerting{s} }

// GetSetting is Store.GetSetting.
func (a Alerting) GetSetting(ctx context.Context, key string) (string, error) {
	return a.s.GetSetting(ctx, key)
}

// CountTokens counts the active tokens by kind, from memory.
func (a Alerting) CountTokens() map[TokenKind]int { return a.s.tokens.Counts() }

// SyncStatus reports how current this node is with a database that other
// nodes share; ok is false for a database this node alone writes.
func (a Alerting) SyncStatus() (status kv.SyncStatus, ok bool) {
	syncer, ok := a.s.db.(kv.Syncer)
	if !ok {
		return kv.SyncStatus{}, false
	}
	return syncer.SyncStatus(), true
}

// ForEachPermanentToken walks the permanent tokens (active, expired or
// revoked) in expiry order inside one read transaction, so memory stays
// bounded by one token. It reads the records stored under the expiry keys,
// one sequential scan, rather than looking up each t/<id>: at a million
// tokens those point reads cost tens of seconds per walk. The walk is for
// expiry: it leaves LastUsedAt nil (reading it would cost a point read per
// token; the lists have it). Returning an error from fn stops the walk and
// returns that error.
func (a Alerting) ForEachPermanentToken(ctx context.Context, fn func(Token) error) error {
	return a.s.view(ctx, func(r kv.Reader) error {
		now := a.s.clock.Now()
		live := newLiveTokens(r, now)
		return r.Scan(prefixExpiry, kv.ScanOptions{}, func(key, val []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			rec, err := expiryRecord(key, val)
			if err != nil {
				return err
			}
			if ok, err := live.live(&rec); err != nil || !ok {
				return err
			}
			t := rec.Token
			t.Status = t.StatusAt(now)
			return fn(t)
		})
	})
}

// expiryRecord decodes the token record stored under an expiry key.
func expiryRecord(key, val []byte) (tokenRecord, error) {
	pos := string(key[len(prefixExpiry):])
	id, ok := expiryPosID(pos)
	if !ok {
		return tokenRecord{}, fmt.Errorf("storage: corrupt expiry index key")
	}
	rec, err := unmarshalToken(val)
	if err != nil {
		return tokenRecord{}, fmt.Errorf("storage: read expiry index: %w", err)
	}
	if rec.ID != id {
		return tokenRecord{}, fmt.Errorf("storage: expiry index entry for token %q holds token %q", id, rec.ID)
	}
	return rec, nil
}

// GetAlertStates returns the alert states stored for the tokens with these
// ids, in one read; tokens with none are absent from the map.
func (a Alerting) GetAlertStates(ctx context.Context, ids []string) (map[string]AlertState, error) {
	states := make(map[string]AlertState, len(ids))
	keys := make([]string, 0, len(ids))
	for _, id := range ids {
		if plausibleTokenID(id) {
			keys = append(keys, alertKey(id))
		}
	}
	err := a.s.view(ctx, func(r kv.Reader) error {
		return r.GetMany(keys, func(i int, val []byte) error {
			var st AlertState
			if err := json.Unmarshal(val, &st); err != nil {
				return fmt.Errorf("storage: corrupt alert state: %w", err)
			}
			states[keys[i][len(prefixAlert):]] = st
			return nil
		})
	})
	return states, err
}

// PutAlertStates stores several alert states in one transaction, fenced
// by the alert lease l (ErrLeaseLost if another node holds it now). States
// of tokens deleted meanwhile are dropped, so none outlives its token.
func (a Alerting) PutAlertStates(ctx context.Context, l Lease, states map[string]AlertState) error {
	if len(states) == 0 {
		return nil
	}
	return a.s.update(ctx, func(w *writeTxn) error {
		if err := checkLease(w, l); err != nil {
			return err
		}
		// Only live tokens get a state, read in one GetMany (one query
		// on PostgreSQL, not one per token).
		var ids, keys []string
		for id := range states {
			if plausibleTokenID(id) {
				ids, keys = append(ids, id), append(keys, tokenKey(id))
			}
		}
		live := make([]bool, len(ids))
		if err := w.GetMany(keys, func(i int, _ []byte) error { live[i] = true; return nil }); err != nil {
			return fmt.Errorf("storage: read tokens: %w", err)
		}
		for i, id := range ids {
			if !live[i] {
				continue
			}
			b, err := json.Marshal(states[id])
			if err != nil {
				return fmt.Errorf("storage: encode alert state: %w", err)
			}
			if err := set(w, alertKey(id), b); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutAlertView stores the last alert pass's results, fenced by the alert
// lease l, and tells every node (WatchAlertView).
func (a Alerting) PutAlertView(ctx context.Context, l Lease, view []byte) error {
	return a.s.update(ctx, func(w *writeTxn) error {
		if err := checkLease(w, l); err != nil {
			return err
		}
		if err := set(w, keyAlertView, view); err != nil {
			return err
		}
		w.Publish(keyAlertView, nil)
		return nil
	})
}

// WatchAlertView calls fn with the stored alert view (nil if none yet)
// now, and again whenever any node stores a new one.
func (a Alerting) WatchAlertView(ctx context.Context, fn func(view []byte)) error {
	// The hook is registered before the read so that no change falls
	// between them; a view the feed delivers meanwhile is newer than the
	// one read, which is then dropped.
	var mu sync.Mutex
	delivered := false
	a.s.hooksMu.Lock()
	a.s.onAlertView = append(a.s.onAlertView, func(view []byte) {
		mu.Lock()
		defer mu.Unlock()
		delivered = true
		fn(view)
	})
	a.s.hooksMu.Unlock()
	var view []byte
	err := a.s.view(ctx, func(r kv.Reader) error {
		val, _, err := getValue(r, keyAlertView)
		view = val
		return err
	})
	if err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	if !delivered {
		fn(view)
	}
	return nil
}
