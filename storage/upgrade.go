package storage

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// keyExpiryCopies marks a store whose expiry keys all hold a copy of
// their token record, so later opens skip the scan in fillExpiryCopies.
const keyExpiryCopies = "m/expiry_copies"

// fillExpiryCopies runs at open until it has succeeded once per store. It
// copies each token record to its expiry key where a store written before
// those copies existed has an empty value, so ForEachPermanentToken reads
// sequentially there too. Until it succeeds the walk still works, reading
// t/<id> for empty values; a failure is logged and retried at the next
// open.
func (s *Store) fillExpiryCopies(ctx context.Context) {
	var done bool
	err := s.view(ctx, func(r Reader) (err error) {
		done, err = exists(r, keyExpiryCopies)
		return err
	})
	if err != nil || done {
		return
	}
	filled, attempt := 0, 0
	err = s.inBatches(ctx, prefixExpiry, ScanOptions{}, func(w *writeTxn, batch []batchItem) error {
		attempt = 0
		var keys, expiryKeys []string
		for _, b := range batch {
			if len(b.val) == 0 && len(b.suffix) > 9 { // <expiry BE>/<id>
				keys = append(keys, tokenKey(b.suffix[9:]))
				expiryKeys = append(expiryKeys, prefixExpiry+b.suffix)
			}
		}
		return w.GetMany(keys, func(i int, val []byte) error {
			attempt++
			return set(w, expiryKeys[i], val)
		})
	}, func(int) { filled += attempt })
	if err == nil {
		err = s.update(ctx, func(w *writeTxn) error { return set(w, keyExpiryCopies, nil) })
	}
	if err != nil {
		s.log.Warn("could not copy token records to the expiry index; the expiry walk stays slower until the next start retries", zap.Error(err))
	} else if filled > 0 {
		s.log.Info("copied token records to the expiry index", zap.Int("tokens", filled))
	}
}

// keyListIndex marks a store whose tokens all have their list keys
// (listKeys), so later opens skip the scan in fillListIndex.
const keyListIndex = "m/list_index"

// fillListIndex runs at open until it has succeeded once per store. It
// writes the list keys of every token of a store written before the lists
// paged, in batches; writing a key that exists already changes nothing, so
// several nodes may run it at once and a crash half-way is harmless. The
// lists read only those keys, so a store whose keys could not be written
// must not serve them: a failure fails the open.
func (s *Store) fillListIndex(ctx context.Context) error {
	var done bool
	err := s.view(ctx, func(r Reader) (err error) {
		done, err = exists(r, keyListIndex)
		return err
	})
	if err != nil || done {
		return err
	}
	filled := 0
	err = s.inBatches(ctx, prefixToken, ScanOptions{}, func(w *writeTxn, batch []batchItem) error {
		for _, b := range batch {
			rec, err := unmarshalToken(b.val)
			if err != nil {
				return fmt.Errorf("token %s: %w", short(b.suffix), err)
			}
			for _, k := range listKeys(&rec) {
				if err := s.setForToken(w, &rec, k, nil); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(n int) { filled += n })
	if err == nil {
		err = s.update(ctx, func(w *writeTxn) error { return set(w, keyListIndex, nil) })
	}
	if err != nil {
		return fmt.Errorf("storage: building the index of the token lists: %w", err)
	}
	if filled > 0 {
		s.log.Info("indexed the tokens for the paged lists", zap.Int("tokens", filled))
	}
	return nil
}
