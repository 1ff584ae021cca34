package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// ListSettings returns the settings that are set, in KnownSettings order.
func (s *Badger) ListSettings(context.Context) ([]Setting, error) {
	out := []Setting{}
	err := s.view(func(txn *badger.Txn) error {
		for _, key := range KnownSettings {
			val, found, err := getValue(txn, settingKey(key))
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
func (s *Badger) GetSetting(_ context.Context, key string) (string, error) {
	if !slices.Contains(KnownSettings, key) {
		return "", settingNotSet(key)
	}
	var out string
	err := s.view(func(txn *badger.Txn) error {
		val, found, err := getValue(txn, settingKey(key))
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
func (s *Badger) PutSetting(ctx context.Context, key, value string) (Setting, error) {
	norm, err := ValidateSetting(key, value)
	if err != nil {
		return Setting{}, err
	}
	err = s.update(func(w *writeTxn) error {
		if err := set(w.txn, settingKey(key), []byte(norm)); err != nil {
			return err
		}
		w.record(ctx, ActionSettingPut, key, key+"="+norm)
		return nil
	})
	if err != nil {
		return Setting{}, err
	}
	return Setting{Type: SettingType, Key: key, Value: norm}, nil
}

// DeleteSetting removes a setting, or returns ErrNotFound if it is not set.
func (s *Badger) DeleteSetting(ctx context.Context, key string) error {
	if !slices.Contains(KnownSettings, key) {
		return settingNotSet(key)
	}
	return s.update(func(w *writeTxn) error {
		found, err := exists(w.txn, settingKey(key))
		if err != nil {
			return err
		}
		if !found {
			return settingNotSet(key)
		}
		if err := del(w.txn, settingKey(key)); err != nil {
			return err
		}
		w.record(ctx, ActionSettingDelete, key, "")
		return nil
	})
}

// GetAlertState returns what the alert loop stored for a token.
func (s *Badger) GetAlertState(_ context.Context, tokenID string) (AlertState, bool, error) {
	var st AlertState
	var found bool
	if !plausibleTokenID(tokenID) {
		return st, false, nil
	}
	err := s.view(func(txn *badger.Txn) error {
		val, ok, err := getValue(txn, alertKey(tokenID))
		if err != nil || !ok {
			return err
		}
		if err := json.Unmarshal(val, &st); err != nil {
			return fmt.Errorf("storage: corrupt alert state: %w", err)
		}
		found = true
		return nil
	})
	return st, found, err
}

// PutAlertStates stores several alert states in one transaction. States of
// tokens deleted meanwhile are dropped, so none outlives its token.
func (s *Badger) PutAlertStates(_ context.Context, states map[string]AlertState) error {
	if len(states) == 0 {
		return nil
	}
	return s.update(func(w *writeTxn) error {
		for id, st := range states {
			if !plausibleTokenID(id) {
				continue
			}
			live, err := exists(w.txn, tokenKey(id))
			if err != nil {
				return err
			}
			if !live {
				continue
			}
			b, err := json.Marshal(st)
			if err != nil {
				return fmt.Errorf("storage: encode alert state: %w", err)
			}
			if err := set(w.txn, alertKey(id), b); err != nil {
				return err
			}
		}
		return nil
	})
}

// AppendAudit records an event that is not itself a store mutation, such
// as a failed login. Zero Time and empty Actor are filled in from the clock
// and the context.
func (s *Badger) AppendAudit(ctx context.Context, e AuditEntry) error {
	if e.Action == "" {
		return fmt.Errorf("%w: audit entry needs an action", ErrInvalid)
	}
	return s.update(func(w *writeTxn) error {
		if e.Time.IsZero() {
			e.Time = w.now
		}
		if e.Actor == "" {
			e.Actor, e.ClientIP = ActorFrom(ctx)
		}
		e.Time = e.Time.UTC()
		w.audit = append(w.audit, e)
		return nil
	})
}

// writeAudit appends entries under a/<time><seq> and saves the sequence,
// so entries written in the same nanosecond, or after a restart with a
// clock that went back, never overwrite each other. Called under s.mu.
func (s *Badger) writeAudit(txn *badger.Txn, entries []AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	seq := s.auditSeq
	for _, e := range entries {
		seq++
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("storage: encode audit entry: %w", err)
		}
		if err := set(txn, prefixAudit+be64(e.Time.UnixNano())+be64(int64(seq)), b); err != nil {
			return err
		}
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], seq)
	if err := set(txn, keyAuditSeq, v[:]); err != nil {
		return err
	}
	s.auditSeq = seq // the commit may still fail: a gap in sequence numbers is harmless
	return nil
}

// ListAudit returns up to limit entries, newest first. A limit below 1
// means the default of 100; above 1000 it is capped at 1000.
func (s *Badger) ListAudit(_ context.Context, limit int) ([]AuditEntry, error) {
	if limit < 1 {
		limit = defaultAuditLimit
	}
	limit = min(limit, maxAuditLimit)
	out := []AuditEntry{}
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Reverse = true
		opts.Prefix = []byte(prefixAudit)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek([]byte(prefixAudit + "\xff")); it.Valid() && len(out) < limit; it.Next() {
			var e AuditEntry
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
				return fmt.Errorf("storage: corrupt audit entry: %w", err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// pruneBatch bounds one pruning transaction, so the write lock is held
// briefly and the transaction stays far below Badger's size limit.
const pruneBatch = 1000

// PruneAudit deletes audit entries older than before, a batch per
// transaction, oldest first (the keys start with the entry's time), until
// done or ctx is cancelled. If it
// deleted any, it appends an entry saying how many, so the log itself
// shows that it was trimmed.
func (s *Badger) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n, err := s.pruneAuditBatch(before)
		total += n
		if err != nil {
			return total, err
		}
		if n < pruneBatch {
			break
		}
	}
	if total == 0 {
		return 0, nil
	}
	return total, s.AppendAudit(ctx, AuditEntry{
		Action: ActionAuditPrune,
		Detail: fmt.Sprintf("deleted %d entries older than %s", total, before.UTC().Format(time.RFC3339)),
	})
}

func (s *Badger) pruneAuditBatch(before time.Time) (int, error) {
	cutoff := []byte(prefixAudit + be64(before.UnixNano()))
	n := 0
	err := s.update(func(w *writeTxn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixAudit)
		it := w.txn.NewIterator(opts)
		var old [][]byte
		for it.Rewind(); it.Valid() && len(old) < pruneBatch; it.Next() {
			key := it.Item().KeyCopy(nil)
			if bytes.Compare(key, cutoff) >= 0 {
				break
			}
			old = append(old, key)
		}
		it.Close()
		for _, key := range old {
			if err := w.txn.Delete(key); err != nil {
				return fmt.Errorf("storage: prune audit: %w", err)
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
