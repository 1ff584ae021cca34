package verifier

import (
	"errors"
	"fmt"
	"sync"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Token is what the verifier keeps of a token record. ID and User may
// point into a buffer that the caller reuses: the verifier copies what it
// keeps.
type Token struct {
	Hash      secret.Hash
	ID        []byte // TokenIDLen bytes
	User      []byte
	Kind      secret.Kind
	ExpiresAt int64 // unix nanoseconds
	RevokedAt int64 // unix nanoseconds; 0: not revoked
	// Scopes are its scope names, space-separated; Networks its allowed
	// networks, canonical prefixes space-separated (none: any network).
	Scopes, Networks []byte
}

// ErrUnknownUser is returned for a token whose user the verifier does not
// hold: its user was deleted and the deletion of its tokens has not
// finished. Such a token is not kept, so it does not verify.
var ErrUnknownUser = errors.New("verifier: the token's user is unknown")

// PutUser adds a user or changes one; its tokens see the change on their
// very next request.
func (v *Verifier) PutUser(u User) {
	t := v.cur.Load()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.users.put(u, v.grants)
}

// RemoveUser forgets a deleted user: its tokens verify as unknown from now
// on, although they stay in memory until their own removals arrive.
func (v *Verifier) RemoveUser(name string) {
	t := v.cur.Load()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.users.forget(name)
}

// PutToken adds a token, or records what may change of one held already:
// its revocation, scopes and networks.
// An expired temporary token is removed instead: it can never verify
// again.
func (v *Verifier) PutToken(tok Token) error {
	t := v.cur.Load()
	now := v.clock.Now().UnixNano()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	e, keep, err := t.entry(v.grants, tok, now)
	switch {
	case err != nil:
		return err
	case !keep:
		t.remove(tok.Hash)
	default:
		if _, found := t.lookup(tok.Hash); found {
			t.update(e, now)
		} else {
			t.add(e, now)
		}
	}
	return nil
}

// RemoveToken removes the token with hash h, if it is held; Verify no
// longer finds it.
func (v *Verifier) RemoveToken(h secret.Hash) {
	t := v.cur.Load()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.remove(h)
}

// RemoveTokenByID removes the token with this id, looking through every
// token: the slow way, for a deletion whose hash is not known.
func (v *Verifier) RemoveTokenByID(id string) {
	t := v.cur.Load()
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	for s := range t.shards {
		sh := &t.shards[s]
		sh.mu.RLock()
		var found []secret.Hash
		for h, i := range sh.m {
			if t.slots.at(i).tokenID() == id {
				found = append(found, h)
			}
		}
		sh.mu.RUnlock()
		for _, h := range found {
			t.remove(h)
		}
	}
}

// entry checks a token and finds its user. It reports keep false for a
// temporary token that has expired at now.
func (t *table) entry(g *grants, tok Token, now int64) (e entry, keep bool, err error) {
	if tok.Kind == secret.Temporary && tok.ExpiresAt <= now {
		return entry{}, false, nil
	}
	if len(tok.ID) != TokenIDLen {
		return entry{}, false, fmt.Errorf("verifier: token id %q is not %d bytes long", tok.ID, TokenIDLen)
	}
	user := t.users.byName[string(tok.User)] // no allocation: the compiler optimizes map[string(b)]
	if user == nil {
		return entry{}, false, ErrUnknownUser
	}
	networks, err := g.networksOf(tok.Networks)
	if err != nil {
		return entry{}, false, err
	}
	return entry{hash: tok.Hash, id: tok.ID, user: user, kind: kindByte(tok.Kind), expires: tok.ExpiresAt, revoked: tok.RevokedAt,
		scopes: g.maskOf(tok.Scopes), networks: networks}, true, nil
}

// A Load builds the verifier's memory anew, from a snapshot of the
// database, while Verify goes on answering from the memory it replaces:
// add every user, then every token (from several goroutines at once, one
// LoadPart each), then Install it.
type Load struct {
	v     *Verifier
	t     *table
	now   int64
	mu    sync.Mutex
	parts []*LoadPart
}

// NewLoad starts a Load sized for about sizeHint tokens.
func (v *Verifier) NewLoad(sizeHint int) *Load {
	return &Load{v: v, t: newTable(sizeHint), now: v.clock.Now().UnixNano()}
}

// AddUser adds a user. Every user is added before the first token.
func (l *Load) AddUser(u User) { l.t.users.put(u, l.v.grants) }

// Part returns a part of the Load for one goroutine to add tokens to.
func (l *Load) Part() *LoadPart {
	p := &LoadPart{t: l.t, g: l.v.grants, now: l.now}
	l.mu.Lock()
	l.parts = append(l.parts, p)
	l.mu.Unlock()
	return p
}

// LoadPart is what one goroutine of a Load adds. Its counts are merged by
// Install, so the goroutines do not contend on one lock for them.
type LoadPart struct {
	t    *table
	g    *grants
	now  int64
	ends endHeap
	live [3]int
}

// AddToken adds a token, as PutToken does. ErrUnknownUser says that its
// user was not added.
func (p *LoadPart) AddToken(tok Token) error {
	e, keep, err := p.t.entry(p.g, tok, p.now)
	if err != nil || !keep {
		return err
	}
	slot := p.t.place(e)
	if s := p.t.slots.at(slot); s.end() > p.now {
		s.counted = true
		p.live[e.kind]++
		p.ends = append(p.ends, endItem{s.end(), slotRef{slot, s.gen.Load()}})
	}
	return nil
}

// Install makes the loaded memory current. Uses of tokens seen since the
// last flush of the memory it replaces are dropped, and counted in the
// result: last use is best effort, and at most a flush old.
func (l *Load) Install() (droppedUses int) {
	t := l.t
	total := 0
	for _, p := range l.parts {
		total += len(p.ends)
	}
	t.ends = make(endHeap, 0, total)
	for _, p := range l.parts {
		t.ends = append(t.ends, p.ends...)
		for k, n := range p.live {
			t.live[k] += n
		}
	}
	t.ends.init()
	t.rememberRemoved(l.v.cur.Load())
	old := l.v.cur.Swap(t)
	return len(old.takeDirty())
}

// rememberRemoved carries over what old remembers of removed tokens,
// oldest first, but for the tokens t holds.
func (t *table) rememberRemoved(old *table) {
	for s := range old.shards {
		from, to := &old.shards[s], &t.shards[s]
		from.mu.RLock()
		to.mu.Lock()
		for k := range removedPerShard {
			h := from.removedRing[(from.removedNext+k)%removedPerShard]
			if _, remembered := from.removed[h]; !remembered {
				continue // never set, or forgotten already
			}
			if _, held := to.m[h]; !held {
				to.remember(h)
			}
		}
		to.mu.Unlock()
		from.mu.RUnlock()
	}
}
