package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
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
func (s *Badger) fillExpiryCopies() {
	var done bool
	err := s.view(func(txn *badger.Txn) (err error) {
		done, err = exists(txn, keyExpiryCopies)
		return err
	})
	filled := 0
	from := []byte(prefixExpiry)
	for !done && err == nil {
		err = s.update(func(w *writeTxn) error {
			n, next, end, err := fillExpiryBatch(w.txn, from, purgeBatch)
			if err != nil {
				return err
			}
			filled, from, done = filled+n, next, end
			if end {
				return set(w.txn, keyExpiryCopies, nil)
			}
			return nil
		})
	}
	if err != nil {
		s.log.Warn("could not copy token records to the expiry index; the expiry walk stays slower until the next start retries", zap.Error(err))
	} else if filled > 0 {
		s.log.Info("copied token records to the expiry index", zap.Int("tokens", filled))
	}
}

// fillExpiryBatch fills up to limit empty expiry values from the key from
// on and returns how many, where to go on, and whether the e/ prefix is
// exhausted. An expiry key without its record is left alone (the walk
// skips it).
func fillExpiryBatch(txn *badger.Txn, from []byte, limit int) (n int, next []byte, end bool, err error) {
	var empty [][]byte
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixExpiry)
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	for it.Seek(from); it.Valid() && err == nil; it.Next() {
		item := it.Item()
		if len(empty) == limit {
			next = item.KeyCopy(nil)
			break
		}
		err = item.Value(func(v []byte) error {
			if len(v) == 0 {
				empty = append(empty, item.KeyCopy(nil))
			}
			return nil
		})
	}
	it.Close() // a read-write transaction allows one iterator at a time
	if err != nil {
		return 0, nil, false, fmt.Errorf("storage: read expiry index: %w", err)
	}
	for _, key := range empty {
		id := string(key[len(prefixExpiry)+8+1:])
		val, found, err := getValue(txn, tokenKey(id))
		if err != nil {
			return n, nil, false, err
		}
		if !found {
			continue
		}
		if err := set(txn, string(key), val); err != nil {
			return n, nil, false, err
		}
		n++
	}
	return n, next, next == nil, nil
}
