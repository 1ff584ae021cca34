package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// A failed login is one audit row per user, client address and window,
// with a count, so a flood of failures grows the audit log by at most
// users × addresses × windows rows, and the login throttle's per-user
// backoff keeps the addresses per user and window few. Failures for
// usernames that do not exist are not stored at all: there is nobody to
// tell, and anyone can make up usernames without end.

// loginFailureRow is where the current window's row of a (user, address)
// pair is: the value of lf/<username>/<address>, written with a TTL that
// ends with the window.
type loginFailureRow struct {
	Key   []byte    `json:"key"`   // the audit entry's key (binary: a JSON string would mangle it)
	Start time.Time `json:"start"` // when its window started
}

// RecordLoginFailure records a failed password check in the audit log:
// for e.Target, a username, from e.ClientIP. Within window of the
// first failure of that user from that address, later ones add to the
// same entry's Count rather than adding rows. It records nothing, and
// returns false, if the user does not exist.
func (s *Store) RecordLoginFailure(ctx context.Context, e AuditEntry, window time.Duration) (bool, error) {
	if ValidateUsername(e.Target) != nil {
		return false, nil
	}
	recorded := false
	err := s.update(ctx, func(w *writeTxn) error {
		recorded = false
		if _, err := getUser(w, e.Target); errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		recorded = true
		return recordLoginFailure(w, e, window)
	})
	return recorded, err
}

func recordLoginFailure(w *writeTxn, e AuditEntry, window time.Duration) error {
	e.Time, e.Count = w.now.UTC(), 1
	pairKey := prefixLoginFailure + e.Target + "/" + failureAddr(e.ClientIP)
	var row loginFailureRow
	found, err := getJSON(w, pairKey, &row)
	if err != nil {
		return err
	}
	if found && w.now.Before(row.Start.Add(window)) {
		counted, err := addToFailureRow(w, string(row.Key), e)
		if err != nil || counted {
			return err
		}
		// The entry was pruned meanwhile: start a new one.
	}
	seq, err := w.NextSeq()
	if err != nil {
		return fmt.Errorf("storage: audit sequence: %w", err)
	}
	row = loginFailureRow{Key: []byte(auditKey(e.Time, seq)), Start: w.now}
	if err := putJSON(w, string(row.Key), e, 0); err != nil {
		return err
	}
	return putJSON(w, pairKey, row, window+time.Minute)
}

// addToFailureRow counts e in the audit entry at key, if it is still
// there: one more failure, the last one's time in Detail.
func addToFailureRow(w *writeTxn, key string, e AuditEntry) (bool, error) {
	val, found, err := w.Get(key)
	if err != nil || !found {
		return false, err
	}
	prev, err := decodeAudit(val)
	if err != nil {
		return false, err
	}
	prev.Count = max(prev.Count, 1) + 1
	prev.Detail = fmt.Sprintf("%s; %d failures, the last at %s", e.Detail, prev.Count, e.Time.Format(time.RFC3339))
	return true, putJSON(w, key, prev, 0)
}

// failureAddr is a client address as it appears in an lf/ key: a long
// one (no IP address is) is hashed.
func failureAddr(ip string) string {
	if len(ip) > 64 {
		sum := sha256.Sum256([]byte(ip))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return ip
}

func getJSON(r kv.Reader, key string, v any) (bool, error) {
	val, found, err := getValue(r, key)
	if err != nil || !found {
		return false, err
	}
	if err := json.Unmarshal(val, v); err != nil {
		return false, fmt.Errorf("storage: corrupt %s: %w", keyKind(key), err)
	}
	return true, nil
}

func putJSON(w kv.Writer, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("storage: encode %s: %w", keyKind(key), err)
	}
	return setTTL(w, key, b, ttl)
}
