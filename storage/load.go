package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// load builds the in-memory index from disk: users first, then every token
// record, streamed so memory holds only the index itself. It returns the
// names of missing users that token records still refer to.
func (s *Badger) load() (orphanUsers map[string]bool, err error) {
	now := s.clock.Now().UnixNano()
	err = s.db.View(func(txn *badger.Txn) error {
		if err := s.loadAuditSeq(txn); err != nil {
			return err
		}
		err := scan(txn, prefixUser, true, func(_, val []byte) error {
			var u userRecord
			if err := json.Unmarshal(val, &u); err != nil {
				return fmt.Errorf("storage: corrupt user record: %w", err)
			}
			s.idx.users.put(u.User)
			return nil
		})
		if err != nil {
			return err
		}
		orphanUsers, err = s.loadTokens(txn, now)
		return err
	})
	return orphanUsers, err
}

// loadTokens streams the token records into the index, splitting the key
// space between a few goroutines (ids are random hex, so the split is
// even) and sizing the maps up front from Badger's table statistics.
func (s *Badger) loadTokens(txn *badger.Txn, now int64) (orphanUsers map[string]bool, err error) {
	if hint := s.tokenCountHint(); hint > 0 {
		s.idx.sizeShards(hint)
	}
	bounds := loadBounds(min(runtime.GOMAXPROCS(0), 4))
	parts := make([]loadPart, len(bounds)-1)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Go(func() { parts[i] = s.loadRange(txn, bounds[i], bounds[i+1], now) })
	}
	wg.Wait()
	return s.idx.finishLoad(parts)
}

// finishLoad merges what the loading goroutines found: live counts, one
// expiry heap, ordered once in O(n) and allocated at its exact size, and
// the missing users that token records refer to.
func (idx *index) finishLoad(parts []loadPart) (orphanUsers map[string]bool, err error) {
	total := 0
	for _, p := range parts {
		if p.err != nil {
			return nil, p.err
		}
		total += len(p.ends)
		for u := range p.orphanUsers {
			if orphanUsers == nil {
				orphanUsers = map[string]bool{}
			}
			orphanUsers[u] = true
		}
	}
	idx.ends = make(endHeap, 0, total)
	for _, p := range parts {
		idx.ends = append(idx.ends, p.ends...)
		for k, n := range p.live {
			idx.live[k] += n
		}
	}
	idx.ends.init()
	return orphanUsers, nil
}

// loadPart is what one loading goroutine found.
type loadPart struct {
	ends        endHeap
	live        [3]int
	orphanUsers map[string]bool // missing users that records refer to
	err         error
}

// loadBounds splits the t/ key space into n ranges on the first hex digit
// of the token id; the first and last ranges are open, so ids of any other
// shape are still loaded.
func loadBounds(n int) []string {
	const idPrefix = prefixToken + "tok_"
	b := []string{prefixToken}
	for i := 1; i < n; i++ {
		b = append(b, idPrefix+string("0123456789abcdef"[16*i/n]))
	}
	return append(b, "")
}

// loadRange loads the records with keys in [from, to) ("" = to the end of
// the t/ prefix), each with its flushed last use. Inserts take the shard
// locks, as other ranges insert too.
func (s *Badger) loadRange(txn *badger.Txn, from, to string, now int64) (p loadPart) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixToken)
	it := txn.NewIterator(opts)
	defer it.Close()
	lu := newLastUseCursor(txn, from)
	defer lu.close()
	for it.Seek([]byte(from)); it.Valid(); it.Next() {
		item := it.Item()
		if to != "" && string(item.Key()) >= to {
			break
		}
		var slot uint32
		var added bool
		if p.err = item.Value(func(val []byte) (err error) { slot, added, err = p.load(s, val, now); return err }); p.err != nil {
			return p
		}
		if !added {
			continue
		}
		var used int64
		if used, p.err = lu.at(item.Key()[len(prefixToken):]); p.err != nil {
			return p
		}
		s.idx.slots.at(slot).lastUsed.Store(used)
	}
	return p
}

// lastUseCursor walks the lu/<id> keys alongside the t/<id> keys of one
// load range. Both are in id order, so every token's flushed last use is
// found in one sequential pass, and afterwards the index alone knows the
// last use of every token (reads need no lu/ point read per token).
type lastUseCursor struct{ it *badger.Iterator }

func newLastUseCursor(txn *badger.Txn, fromTokenKey string) *lastUseCursor {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixLastUsed)
	opts.PrefetchValues = false // 8-byte values sit in the tree; prefetching only copies them
	c := &lastUseCursor{txn.NewIterator(opts)}
	c.it.Seek([]byte(prefixLastUsed + strings.TrimPrefix(fromTokenKey, prefixToken)))
	return c
}

// at returns the last use stored for id, 0 if none. Successive calls must
// pass increasing ids.
func (c *lastUseCursor) at(id []byte) (int64, error) {
	for ; c.it.Valid(); c.it.Next() {
		switch bytes.Compare(c.it.Item().Key()[len(prefixLastUsed):], id) {
		case -1:
			continue
		case 1:
			return 0, nil
		}
		var used int64
		err := c.it.Item().Value(func(v []byte) error {
			if len(v) == 8 {
				used = int64(binary.BigEndian.Uint64(v))
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("storage: read last use: %w", err)
		}
		return used, nil
	}
	return 0, nil
}

func (c *lastUseCursor) close() { c.it.Close() }

// tokenCountHint estimates the number of token records from Badger's
// table statistics, so the index maps are allocated once at the right
// size instead of growing a million entries step by step. Tables that
// straddle the t/ prefix count half.
func (s *Badger) tokenCountHint() int {
	lo, hi := []byte(prefixToken), []byte(prefixToken+"\xff")
	var n uint64
	for _, t := range s.db.Tables() {
		if bytes.Compare(t.Right, lo) < 0 || bytes.Compare(t.Left, hi) > 0 {
			continue
		}
		if bytes.HasPrefix(t.Left, lo) && bytes.HasPrefix(t.Right, lo) {
			n += uint64(t.KeyCount)
		} else {
			n += uint64(t.KeyCount) / 2
		}
	}
	return int(min(n, 1<<26))
}

// errOrphanToken marks a token record whose user is gone: DeleteUser
// purges a user's tokens after deleting the user, and a crash in between
// leaves such records. They are skipped here and purged after the load.
var errOrphanToken = errors.New("storage: token of a missing user")

// load decodes one token record and adds it to the index, unless it is an
// expired temporary token or an orphan. It returns the slot it filled and
// notes the token for the counts (merged by finishLoad, so the loading
// goroutines do not contend on countMu).
func (p *loadPart) load(s *Badger, val []byte, now int64) (slot uint32, added bool, err error) {
	f, ok, err := s.decodeEntry(val, now)
	switch {
	case errors.Is(err, errOrphanToken):
		if p.orphanUsers == nil {
			p.orphanUsers = map[string]bool{}
		}
		p.orphanUsers[string(recordUser(val))] = true
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case !ok:
		return 0, false, nil // an expired temporary token
	}
	slot = s.idx.place(f)
	if e := s.idx.slots.at(slot); e.end() > now {
		e.counted = true
		p.live[f.kind]++
		p.ends = append(p.ends, endItem{e.end(), slotRef{slot, e.gen.Load()}})
	}
	return slot, true, nil
}

// decodeEntry reads just what the index needs from a record. It reports
// false for a temporary token that has already expired.
func (s *Badger) decodeEntry(val []byte, now int64) (tokenFields, bool, error) {
	h, err := parseHeader(val)
	if err != nil {
		return tokenFields{}, false, err
	}
	if h.kind == Temporary && h.expires <= now {
		return tokenFields{}, false, nil
	}
	id, rest, err := nextField(h.rest)
	if err != nil {
		return tokenFields{}, false, err
	}
	if len(id) != tokenIDLen {
		return tokenFields{}, false, fmt.Errorf("storage: corrupt token record: id %q", id)
	}
	user, _, err := nextField(rest)
	if err != nil {
		return tokenFields{}, false, err
	}
	st := s.idx.users.byName[string(user)] // no allocation: the compiler optimizes map[string(b)]
	if st == nil {
		return tokenFields{}, false, errOrphanToken
	}
	return tokenFields{hash: h.hash, id: id, user: st, kind: kindByte(h.kind), expires: h.expires, revoked: h.revoked}, true, nil
}

// recordUser returns the user field of a record, nil if it is corrupt.
func recordUser(val []byte) []byte {
	h, err := parseHeader(val)
	if err != nil {
		return nil
	}
	_, rest, err := nextField(h.rest)
	if err != nil {
		return nil
	}
	user, _, _ := nextField(rest)
	return user
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
