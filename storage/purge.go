package storage

import (
	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// purgeBatch is how many tokens one purge transaction deletes. Each costs
// up to six key deletions, so a batch stays far below Badger's transaction
// size limit, which deleting a user in one transaction hit at about 25k
// tokens; the write lock is released between batches. It is a variable
// so tests can make a handful of tokens span several batches.
var purgeBatch = 1000

// markDeleted runs after the commit that deleted a user, under the write
// lock: the user's tokens stop verifying and drop out of reads at once,
// and the name stays reserved until purgeUserTokens has deleted them.
func (s *Badger) markDeleted(name string) {
	if st := s.idx.users.byName[name]; st != nil {
		st.flags.Store(flagDeleted)
	}
	s.purging[name] = true
}

// purgeUserTokens deletes every token keyed under a deleted user's
// ut/<name>/ prefix, purgeBatch per transaction, and then frees the name.
// No token can be added under the prefix meanwhile: the user is gone and
// the name is reserved. On an error the name stays reserved until the next
// open, which finishes the purge.
func (s *Badger) purgeUserTokens(name string) error {
	prefix := userTokensPrefix(name)
	from := []byte(prefix)
	for done := false; !done; {
		if s.purgeHook != nil {
			s.purgeHook()
		}
		err := s.update(func(w *writeTxn) error {
			ids, next, err := keysFrom(w.txn, prefix, from, purgeBatch)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if err := s.purgeToken(w, name, id); err != nil {
					return err
				}
			}
			from, done = next, len(ids) < purgeBatch
			if done {
				w.then(func() {
					delete(s.purging, name)
					s.idx.users.forget(name)
				})
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// purgeToken deletes one token of a deleted user. Its record may already
// be gone (a temporary token Badger's TTL collected); then only the keys
// by id are left.
func (s *Badger) purgeToken(w *writeTxn, user, id string) error {
	rec, found, err := getToken(w.txn, id)
	if err != nil {
		return err
	}
	if found {
		return s.deleteToken(w, rec)
	}
	for _, k := range []string{userTokenKey(user, id), lastUsedKey(id), alertKey(id)} {
		if err := del(w.txn, k); err != nil {
			return err
		}
	}
	return nil
}

// keysFrom returns up to limit keys under prefix from the key from on
// (without the prefix), and the key to continue from. Seeking past what
// earlier batches deleted saves stepping over their tombstones.
func keysFrom(txn *badger.Txn, prefix string, from []byte, limit int) (suffixes []string, next []byte, err error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefix)
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(from); it.Valid() && len(suffixes) < limit; it.Next() {
		suffixes = append(suffixes, string(it.Item().Key()[len(prefix):]))
	}
	if len(suffixes) == 0 {
		return nil, from, nil
	}
	return suffixes, []byte(prefix + suffixes[len(suffixes)-1] + "\x00"), nil
}

// countKeys counts the keys under prefix without reading their values.
func countKeys(txn *badger.Txn, prefix string) (int, error) {
	n := 0
	err := scan(txn, prefix, false, func(_, _ []byte) error { n++; return nil })
	return n, err
}

// purgeOrphanTokens runs at open, before the store is used, when token
// records refer to users that no longer exist: a DeleteUser interrupted
// between its first transaction and the end of its purge. It deletes those
// tokens, so a user created again with the same name can never inherit
// them. Until it has succeeded the names stay reserved; if it fails, the
// tokens still do not verify (the loader skipped them) and the next open
// tries again.
func (s *Badger) purgeOrphanTokens(users map[string]bool) {
	if len(users) == 0 {
		return
	}
	s.mu.Lock()
	for u := range users {
		s.purging[u] = true
	}
	s.mu.Unlock()
	n, err := s.purgeOrphanRecords(users)
	for u := range users {
		if err == nil {
			err = s.purgeUserTokens(u)
		}
	}
	if err != nil {
		s.log.Warn("could not remove the tokens of deleted users; they do not work, and the next start tries again",
			zap.Int("users", len(users)), zap.Error(err))
		return
	}
	s.log.Warn("removed the tokens of deleted users left by an interrupted deletion", zap.Int("users", len(users)), zap.Int("tokens", n))
}

// purgeOrphanRecords walks every token record and deletes those of users,
// purgeBatch per transaction. It finds records whatever else is missing,
// where purgeUserTokens relies on the ut/ keys.
func (s *Badger) purgeOrphanRecords(users map[string]bool) (int, error) {
	total := 0
	from := []byte(prefixToken)
	for done := false; !done; {
		err := s.update(func(w *writeTxn) error {
			recs, next, end, err := orphanRecords(w.txn, users, from, purgeBatch)
			if err != nil {
				return err
			}
			for _, rec := range recs {
				if err := s.deleteToken(w, rec); err != nil {
					return err
				}
			}
			total += len(recs)
			from, done = next, end
			return nil
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// orphanRecords collects up to limit records of users from the key from
// on; end reports that the t/ prefix is exhausted.
func orphanRecords(txn *badger.Txn, users map[string]bool, from []byte, limit int) (recs []tokenRecord, next []byte, end bool, err error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixToken)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Seek(from); it.Valid(); it.Next() {
		if len(recs) == limit {
			return recs, it.Item().KeyCopy(nil), false, nil
		}
		err := it.Item().Value(func(val []byte) error {
			if !users[string(recordUser(val))] {
				return nil
			}
			rec, err := unmarshalToken(val)
			recs = append(recs, rec)
			return err
		})
		if err != nil {
			return nil, nil, false, err
		}
	}
	return recs, nil, true, nil
}
