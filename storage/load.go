package storage

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// load builds the in-memory index from disk: users first, then every token
// record, streamed so memory holds only the index itself.
func (s *Badger) load() error {
	now := s.clock.Now().UnixNano()
	return s.db.View(func(txn *badger.Txn) error {
		if err := s.loadAuditSeq(txn); err != nil {
			return err
		}
		err := scan(txn, prefixUser, true, func(_, val []byte) error {
			var u userRecord
			if err := json.Unmarshal(val, &u); err != nil {
				return fmt.Errorf("storage: corrupt user record: %w", err)
			}
			s.idx.users[u.Username] = newUserState(u.User)
			return nil
		})
		if err != nil {
			return err
		}
		return s.loadTokens(txn, now)
	})
}

func newUserState(u User) *userState {
	st := &userState{name: u.Username}
	st.flags.Store(userFlags(u))
	return st
}

func (s *Badger) loadTokens(txn *badger.Txn, now int64) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixToken)
	it := txn.NewIterator(opts)
	defer it.Close()
	skipped := 0
	for it.Rewind(); it.Valid(); it.Next() {
		var e *tokenEntry
		err := it.Item().Value(func(val []byte) error {
			var err error
			e, err = s.entryFromRecord(val, now)
			return err
		})
		if err != nil {
			return err
		}
		if e == nil {
			skipped++
			continue
		}
		s.idx.addLoaded(e, now)
	}
	s.idx.ends.init()
	if skipped > 0 {
		s.log.Warn("skipped token records whose user no longer exists", zap.Int("count", skipped))
	}
	return nil
}

// entryFromRecord decodes just what the index needs. It returns nil for a
// temporary token that has already expired and for a token whose user is
// gone (which a committed DeleteUser never leaves behind).
func (s *Badger) entryFromRecord(val []byte, now int64) (*tokenEntry, error) {
	h, err := parseHeader(val)
	if err != nil {
		return nil, err
	}
	if h.kind == Temporary && h.expires <= now {
		return nil, nil
	}
	id, rest, err := nextField(h.rest)
	if err != nil {
		return nil, err
	}
	user, _, err := nextField(rest)
	if err != nil {
		return nil, err
	}
	st := s.idx.users[string(user)] // no allocation: the compiler optimizes map[string(b)]
	if st == nil {
		return nil, nil
	}
	e := &tokenEntry{hash: h.hash, id: string(id), kind: h.kind, user: st, expires: h.expires}
	e.revoked.Store(h.revoked)
	return e, nil
}

// addLoaded is add without the heap ordering, which loadTokens does once
// at the end, and without locks, since nothing else sees the index yet.
func (idx *index) addLoaded(e *tokenEntry, now int64) {
	idx.shardFor(e.hash).m[e.hash] = e
	if end := e.end(); end > now {
		e.counted = true
		idx.live[kindSlot(e.kind)]++
		idx.ends = append(idx.ends, endItem{end, e})
	}
}

func (s *Badger) loadAuditSeq(txn *badger.Txn) error {
	val, found, err := getValue(txn, keyAuditSeq)
	if err != nil || !found {
		return err
	}
	if len(val) != 8 {
		return fmt.Errorf("storage: corrupt audit sequence")
	}
	s.auditSeq = binary.BigEndian.Uint64(val)
	return nil
}

// ttlUntil is the Badger TTL for a record that the clock says expires at
// t. Badger's TTL runs on the wall clock and only collects garbage, so it
// is rounded up generously; a minute is the floor Badger can honour well.
func (s *Badger) ttlUntil(t time.Time) time.Duration {
	d := t.Sub(s.clock.Now())
	if d < 0 {
		d = 0
	}
	return d + time.Minute
}
