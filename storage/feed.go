package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// subscriber is how the Store takes the backend's change feed: a reset
// builds a new index from a snapshot and swaps it in whole (Verify keeps
// reading the old one meanwhile); every applied change updates the
// current index.
type subscriber struct{ s *Store }

// Reset loads the snapshot r into a new index and makes it current, and
// tells the watchers of settings and of the alert view, which may have
// changed in what the reset skipped.
func (sub subscriber) Reset(r kv.Reader, concurrent bool) error {
	s := sub.s
	idx := newIndex(s.annotate)
	orphans, err := idx.load(r, concurrent, s.clock.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("loading tokens: %w", err)
	}
	view, _, err := getValue(r, alertViewKey)
	if err != nil {
		return fmt.Errorf("loading the alert view: %w", err)
	}
	s.orphans.Store(&orphans)
	old := s.idx.Swap(idx)
	if n := len(old.takeDirty()); n > 0 {
		// The last uses seen by the old index since its last flush are
		// lost; last_used_at is best effort and at most a flush old.
		s.log.Debug("dropped unflushed last uses at reload", zap.Int("tokens", n))
	}
	s.settingsChanged()
	if view != nil {
		s.alertViewChanged(view)
	}
	return nil
}

// Apply changes the current index to match the changed keys, and tells
// the watchers of settings and of the alert view.
func (sub subscriber) Apply(changes []kv.Change) {
	s := sub.s
	settings := s.idx.Load().apply(changes, s.clock.Now().UnixNano(), s.log)
	if settings {
		s.settingsChanged()
	}
	for _, c := range changes {
		if c.Key == alertViewKey {
			s.alertViewChanged(c.Value)
		}
	}
}

// apply updates the index from changed keys and reports whether a setting
// changed. Users go first: a token in the same batch may belong to a user
// the batch creates.
func (idx *index) apply(changes []kv.Change, now int64, log *zap.Logger) (settings bool) {
	idx.writeMu.Lock()
	defer idx.writeMu.Unlock()
	for _, c := range changes {
		if name, ok := strings.CutPrefix(c.Key, prefixUser); ok {
			if err := idx.applyUser(name, c); err != nil {
				log.Error("applying a changed user", zap.String("user", name), zap.Error(err))
			}
		}
	}
	for _, c := range changes {
		switch {
		case strings.HasPrefix(c.Key, prefixToken):
			if err := idx.applyToken(c, now); err != nil {
				log.Error("applying a changed token", zap.String("token_id", short(c.Key[len(prefixToken):])), zap.Error(err))
			}
		case strings.HasPrefix(c.Key, prefixSetting):
			settings = true
		}
	}
	return settings
}

func (idx *index) applyUser(name string, c kv.Change) error {
	if !c.Found {
		idx.users.forget(name)
		return nil
	}
	var u User
	if err := json.Unmarshal(c.Value, &u); err != nil {
		return fmt.Errorf("corrupt user record: %w", err)
	}
	if st := idx.users.byName[name]; st != nil {
		st.flags.Store(userFlags(u))
		return nil
	}
	idx.users.put(u)
	return nil
}

// applyToken adds, updates or removes one token. A deleted token is found
// by the hash it was published with.
func (idx *index) applyToken(c kv.Change, now int64) error {
	if !c.Found {
		if len(c.Hint) != len(secret.Hash{}) {
			// Every deletion publishes the hash (deleteToken); should one
			// ever not, find the token by id so it cannot keep working.
			idx.removeID(c.Key[len(prefixToken):])
			return errors.New("token deleted without its hash; removed by id")
		}
		idx.remove(secret.Hash(c.Hint))
		return nil
	}
	f, ok, err := idx.decodeEntry(c.Value, now)
	switch {
	case errors.Is(err, errOrphanToken):
		return nil // its user is gone: it must not verify
	case err != nil:
		return err
	case !ok:
		idx.remove(f.hash) // an expired temporary token
		return nil
	}
	if _, found := idx.lookup(f.hash); found {
		idx.revoke(f.hash, f.revoked, now)
		return nil
	}
	idx.add(f, now)
	return nil
}

// removeID removes the token with this id, scanning every shard. It is
// the slow path of a deletion published without its hash.
func (idx *index) removeID(id string) {
	for s := range idx.shards {
		sh := &idx.shards[s]
		sh.mu.RLock()
		var found []secret.Hash
		for h, i := range sh.m {
			if idx.slots.at(i).tokenID() == id {
				found = append(found, h)
			}
		}
		sh.mu.RUnlock()
		for _, h := range found {
			idx.remove(h)
		}
	}
}

// load builds the index from a snapshot: users first, then every token
// record, streamed so memory holds only the index itself. It returns the
// names of missing users that token records still refer to.
func (idx *index) load(r kv.Reader, concurrent bool, now int64) (orphanUsers map[string]bool, err error) {
	err = r.Scan(prefixUser, kv.ScanOptions{}, func(_, val []byte) error {
		var u User
		if err := json.Unmarshal(val, &u); err != nil {
			return fmt.Errorf("storage: corrupt user record: %w", err)
		}
		idx.users.put(u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h, ok := r.(interface{ CountHint(prefix string) int }); ok {
		if n := h.CountHint(prefixToken); n > 0 {
			idx.sizeShards(n)
		}
	}
	parts := 1
	if concurrent {
		parts = min(runtime.GOMAXPROCS(0), 4)
	}
	bounds := loadBounds(parts)
	results := make([]loadPart, len(bounds)-1)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = idx.loadRange(r, bounds[i], bounds[i+1], now) })
	}
	wg.Wait()
	return idx.finishLoad(results)
}

// loadBounds splits the t/ key space into n ranges on the first hex digit
// of the token id; the first and last ranges are open, so ids of any other
// shape are still loaded.
func loadBounds(n int) []string {
	const idPrefix = prefixToken + "tok_"
	b := []string{""}
	for i := 1; i < n; i++ {
		b = append(b, idPrefix+string("0123456789abcdef"[16*i/n]))
	}
	return append(b, "")
}

// loadRange loads the records with keys in [from, to) ("" = the start or
// the end of the t/ prefix). Inserts take the shard locks, as other ranges
// insert too.
func (idx *index) loadRange(r kv.Reader, from, to string, now int64) (p loadPart) {
	p.err = r.Scan(prefixToken, kv.ScanOptions{From: from, To: to}, func(_, val []byte) error {
		return p.load(idx, val, now)
	})
	return p
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

// errOrphanToken marks a token record whose user is gone: the user was
// deleted and the purge of their tokens has not finished. Such tokens are
// never put in the index.
var errOrphanToken = errors.New("storage: token of a missing user")

// load decodes one token record and adds it to the index, unless it is an
// expired temporary token or an orphan, and notes the token for the
// counts (merged by finishLoad, so the loading goroutines do not contend
// on countMu).
func (p *loadPart) load(idx *index, val []byte, now int64) error {
	f, ok, err := idx.decodeEntry(val, now)
	switch {
	case errors.Is(err, errOrphanToken):
		if p.orphanUsers == nil {
			p.orphanUsers = map[string]bool{}
		}
		p.orphanUsers[string(recordUser(val))] = true
		return nil
	case err != nil:
		return err
	case !ok:
		return nil // an expired temporary token
	}
	slot := idx.place(f)
	if e := idx.slots.at(slot); e.end() > now {
		e.counted = true
		p.live[f.kind]++
		p.ends = append(p.ends, endItem{e.end(), slotRef{slot, e.gen.Load()}})
	}
	return nil
}

// decodeEntry reads just what the index needs from a record. It reports
// false (with the hash filled in) for a temporary token that has already
// expired.
func (idx *index) decodeEntry(val []byte, now int64) (tokenFields, bool, error) {
	h, err := parseHeader(val)
	if err != nil {
		return tokenFields{}, false, err
	}
	if h.kind == Temporary && h.expires <= now {
		return tokenFields{hash: h.hash}, false, nil
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
	st := idx.users.byName[string(user)] // no allocation: the compiler optimizes map[string(b)]
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
