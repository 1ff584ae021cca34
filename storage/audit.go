package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Limits of ListAudit: the default and the largest number of entries,
// those of every page.
const (
	DefaultAuditLimit = DefaultPageLimit
	MaxAuditLimit     = MaxPageLimit
)

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
		if err := set(w, auditKey(e.Time, seq), b); err != nil {
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
