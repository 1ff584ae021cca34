package storage

import (
	"context"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// batchItem is one key a batch visits: its part after the prefix, and its
// value unless the scan was KeysOnly.
type batchItem struct {
	suffix string
	val    []byte
}

// inBatches calls fn with the keys under prefix (up to o.To),
// Options.BatchSize keys per transaction. Each batch resumes after the last key of the one
// before, so it never steps over what earlier batches deleted. fn gets
// the batch's keys at once, so it can read what they point to in one
// GetMany; committed, if not nil, learns the size of each batch that
// committed. inBatches stops early when ctx ends.
func (s *Store) inBatches(ctx context.Context, prefix string, o kv.ScanOptions, fn func(w *writeTxn, batch []batchItem) error, committed func(n int)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.purgeHook != nil {
			s.purgeHook()
		}
		var batch []batchItem
		err := s.update(ctx, func(w *writeTxn) error {
			batch = batch[:0]
			err := w.Scan(prefix, o, func(key, val []byte) error {
				item := batchItem{suffix: string(key[len(prefix):])}
				if !o.KeysOnly {
					item.val = append([]byte(nil), val...)
				}
				batch = append(batch, item)
				if len(batch) == s.batch {
					return kv.ErrStopScan
				}
				return nil
			})
			if err != nil || len(batch) == 0 {
				return err
			}
			return fn(w, batch)
		})
		if err == nil && committed != nil {
			committed(len(batch))
		}
		if err != nil || len(batch) < s.batch {
			return err
		}
		o.From = prefix + batch[len(batch)-1].suffix + "\x00"
	}
}

// purgeTokens deletes the tokens with these ids that still exist, and the
// keys by id of those that do not (a temporary token the backend
// collected): the user token index entry, last use and alert state.
func purgeTokens(w *writeTxn, user string, ids []string) error {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = tokenKey(id)
	}
	found := make([]bool, len(ids))
	var recs []tokenRecord
	err := w.GetMany(keys, func(i int, val []byte) error {
		rec, err := unmarshalToken(val)
		if err != nil {
			return err
		}
		found[i] = true
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		return err
	}
	if err := deleteTokens(w, recs); err != nil {
		return err
	}
	for i, id := range ids {
		if found[i] {
			continue
		}
		for _, k := range []string{userTokenKey(user, id), lastUsedKey(id), alertKey(id)} {
			if err := del(w, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// purgeUserTokens deletes every token keyed under a deleted user's
// ut/<name>/ prefix in batches, then removes the tombstone that reserved
// the name. No token can be added under the prefix meanwhile: the user is
// gone and the name is reserved.
func (s *Store) purgeUserTokens(ctx context.Context, name string) error {
	err := s.inBatches(ctx, userTokensPrefix(name), kv.ScanOptions{KeysOnly: true}, func(w *writeTxn, batch []batchItem) error {
		ids := make([]string, len(batch))
		for i, b := range batch {
			ids[i] = b.suffix
		}
		return purgeTokens(w, name, ids)
	}, nil)
	if err != nil {
		return err
	}
	return s.update(ctx, func(w *writeTxn) error { return del(w, deletedUserKey(name)) })
}

// finishDeletions runs at open and finishes the user deletions that a
// crash interrupted: the tombstones (ud/) of deletions whose purge had
// not finished, and the orphan token records the last reset found, left
// by a deletion interrupted before tombstones existed. Until it has
// succeeded the tokens do not verify (the verifier does not keep tokens
// of missing users) and their names stay reserved; if it fails, the next
// open tries again.
func (s *Store) finishDeletions(ctx context.Context) error {
	var pending []string
	err := s.view(ctx, func(r kv.Reader) error {
		pending = pending[:0]
		return scanKeys(r, prefixDeletedUser, func(name string) error {
			pending = append(pending, name)
			return nil
		})
	})
	if err != nil {
		return err
	}
	var orphans map[string]bool
	if o := s.orphans.Load(); o != nil {
		orphans = *o
	}
	if len(orphans) > 0 {
		if err := s.purgeOrphanRecords(ctx, orphans); err != nil {
			return err
		}
		s.log.Warn("removed the tokens of deleted users left by an interrupted deletion", zap.Int("users", len(orphans)))
		for u := range orphans {
			pending = append(pending, u)
		}
	}
	for _, name := range pending {
		if err := s.purgeUserTokens(ctx, name); err != nil {
			return err
		}
	}
	if len(pending) > 0 {
		s.log.Info("finished deleting the tokens of deleted users", zap.Strings("users", pending))
	}
	return nil
}

// purgeOrphanRecords deletes every token record of the given users. It
// finds records whatever else is missing, where purgeUserTokens relies on
// the ut/ keys.
func (s *Store) purgeOrphanRecords(ctx context.Context, users map[string]bool) error {
	return s.inBatches(ctx, prefixToken, kv.ScanOptions{}, func(w *writeTxn, batch []batchItem) error {
		var recs []tokenRecord
		for _, b := range batch {
			if !users[string(recordUser(b.val))] {
				continue
			}
			rec, err := unmarshalToken(b.val)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return deleteTokens(w, recs)
	}, nil)
}

// countKeys counts the keys under prefix without reading their values.
func countKeys(r kv.Reader, prefix string) (int, error) {
	n := 0
	err := r.Scan(prefix, kv.ScanOptions{KeysOnly: true}, func(_, _ []byte) error { n++; return nil })
	return n, err
}
