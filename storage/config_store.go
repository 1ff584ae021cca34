package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Limits of ListAudit: the default and the largest number of entries,
// those of every page.
const (
	DefaultAuditLimit = DefaultPageLimit
	MaxAuditLimit     = MaxPageLimit
)

// ListSettings returns the settings that are set, in KnownSettings order.
func (s *Store) ListSettings(ctx context.Context) ([]Setting, error) {
	out := []Setting{}
	err := s.view(ctx, func(r kv.Reader) error {
		for _, key := range KnownSettings {
			val, found, err := getValue(r, settingKey(key))
			if err != nil {
				return err
			}
			if found {
				out = append(out, Setting{Type: SettingType, Key: key, Value: string(val)})
			}
		}
		return nil
	})
	return out, err
}

func settingNotSet(key string) error {
	return fmt.Errorf("%w: setting %q is not set", ErrNotFound, short(key))
}

// GetSetting returns a setting's value, or ErrNotFound if it is not set.
func (s *Store) GetSetting(ctx context.Context, key string) (string, error) {
	if !slices.Contains(KnownSettings, key) {
		return "", settingNotSet(key)
	}
	var out string
	err := s.view(ctx, func(r kv.Reader) error {
		val, found, err := getValue(r, settingKey(key))
		if err != nil {
			return err
		}
		if !found {
			return settingNotSet(key)
		}
		out = string(val)
		return nil
	})
	return out, err
}

// PutSetting validates a setting and stores its normalized value.
func (s *Store) PutSetting(ctx context.Context, key, value string) (Setting, error) {
	norm, err := ValidateSetting(key, value)
	if err != nil {
		return Setting{}, err
	}
	err = s.update(ctx, func(w *writeTxn) error {
		if err := set(w, settingKey(key), []byte(norm)); err != nil {
			return err
		}
		w.Publish(settingKey(key), nil)
		w.record(ctx, ActionSettingPut, key, key+"="+norm)
		return nil
	})
	if err != nil {
		return Setting{}, err
	}
	return Setting{Type: SettingType, Key: key, Value: norm}, nil
}

// DeleteSetting removes a setting, or returns ErrNotFound if it is not set.
func (s *Store) DeleteSetting(ctx context.Context, key string) error {
	if !slices.Contains(KnownSettings, key) {
		return settingNotSet(key)
	}
	return s.update(ctx, func(w *writeTxn) error {
		found, err := exists(w, settingKey(key))
		if err != nil {
			return err
		}
		if !found {
			return settingNotSet(key)
		}
		if err := del(w, settingKey(key)); err != nil {
			return err
		}
		w.Publish(settingKey(key), nil)
		w.record(ctx, ActionSettingDelete, key, "")
		return nil
	})
}

// GetAlertStates returns the alert states stored for the tokens with these
// ids, in one read; tokens with none are absent from the map.
func (s *Store) GetAlertStates(ctx context.Context, ids []string) (map[string]AlertState, error) {
	states := make(map[string]AlertState, len(ids))
	keys := make([]string, 0, len(ids))
	for _, id := range ids {
		if plausibleTokenID(id) {
			keys = append(keys, alertKey(id))
		}
	}
	err := s.view(ctx, func(r kv.Reader) error {
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
func (s *Store) PutAlertStates(ctx context.Context, l Lease, states map[string]AlertState) error {
	if len(states) == 0 {
		return nil
	}
	return s.update(ctx, func(w *writeTxn) error {
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

// alertViewKey holds what the last alert pass found (faults, the figures
// its metrics show), as the alerts package encodes it, so that every node
// shows the same.
const alertViewKey = "m/alert_view"

// PutAlertView stores the last alert pass's results, fenced by the alert
// lease l, and tells every node (WatchAlertView).
func (s *Store) PutAlertView(ctx context.Context, l Lease, view []byte) error {
	return s.update(ctx, func(w *writeTxn) error {
		if err := checkLease(w, l); err != nil {
			return err
		}
		if err := set(w, alertViewKey, view); err != nil {
			return err
		}
		w.Publish(alertViewKey, nil)
		return nil
	})
}

// WatchAlertView calls fn with the stored alert view (nil if none yet)
// now, and again whenever any node stores a new one.
func (s *Store) WatchAlertView(ctx context.Context, fn func(view []byte)) error {
	// The hook is registered before the read so that no change falls
	// between them; a view the feed delivers meanwhile is newer than the
	// one read, which is then dropped.
	var mu sync.Mutex
	delivered := false
	s.hooksMu.Lock()
	s.onAlertView = append(s.onAlertView, func(view []byte) {
		mu.Lock()
		defer mu.Unlock()
		delivered = true
		fn(view)
	})
	s.hooksMu.Unlock()
	var view []byte
	err := s.view(ctx, func(r kv.Reader) error {
		val, _, err := getValue(r, alertViewKey)
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

// AppendAudit records an event that is not itself a store mutation, such
// as a failed login. Zero Time and empty Actor are filled in from the clock
// and the context.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.Action == "" {
		return fmt.Errorf("%w: audit entry needs an action", ErrInvalid)
	}
	return s.update(ctx, func(w *writeTxn) error {
		if e.Time.IsZero() {
			e.Time = w.now
		}
		if e.Actor == "" {
			a := CallerFrom(ctx)
			e.Actor, e.ClientIP, e.ActorTokenID, e.ActorTokenKind = a.Name, a.ClientIP, a.TokenID, a.TokenKind
		}
		e.Time = e.Time.UTC()
		w.audit = append(w.audit[:0], e)
		return nil
	})
}

// writeAudit appends entries under a/<time><seq>. The sequence number
// comes from the backend and grows across restarts and nodes, so entries
// written in the same nanosecond, or after a restart with a clock that
// went back, never overwrite each other.
func writeAudit(w kv.Writer, entries []AuditEntry) error {
	for _, e := range entries {
		seq, err := w.NextSeq()
		if err != nil {
			return fmt.Errorf("storage: audit sequence: %w", err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("storage: encode audit entry: %w", err)
		}
		if err := set(w, prefixAudit+be64(e.Time.UnixNano())+be64(int64(seq)), b); err != nil {
			return err
		}
	}
	return nil
}

// decodeAudit decodes a stored audit entry.
func decodeAudit(val []byte) (AuditEntry, error) {
	var e AuditEntry
	if err := json.Unmarshal(val, &e); err != nil {
		return AuditEntry{}, fmt.Errorf("storage: corrupt audit entry: %w", err)
	}
	return e, nil
}

// PruneAudit deletes audit entries older than before, a batch per
// transaction, oldest first (the keys start with the entry's time), until
// done or ctx is cancelled. If it deleted any, it appends an entry saying
// how many, so the log itself shows that it was trimmed.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	total := 0
	err := s.inBatches(ctx, prefixAudit, kv.ScanOptions{KeysOnly: true, To: prefixAudit + be64(before.UnixNano())},
		func(w *writeTxn, batch []batchItem) error {
			for _, b := range batch {
				if err := del(w, prefixAudit+b.suffix); err != nil {
					return err
				}
			}
			return nil
		}, func(n int) { total += n })
	if err != nil || total == 0 {
		return total, err
	}
	return total, s.AppendAudit(ctx, AuditEntry{
		Action: ActionAuditPrune,
		Detail: fmt.Sprintf("deleted %d entries older than %s", total, before.UTC().Format(time.RFC3339)),
	})
}
