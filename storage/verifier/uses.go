package verifier

import (
	"net/netip"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Use is what this node saw of a token's uses and has not handed to
// FlushUses yet: the last one, and the scopes its requests needed.
type Use struct {
	TokenID   string
	Kind      secret.Kind
	At        time.Time
	ExpiresAt time.Time // the token's, so a temporary token's record can expire with it
	// ClientIP is where the last use came from; the zero Addr if the
	// request did not say.
	ClientIP netip.Addr
	// Scopes are the scopes routes needed of it since the last flush, and
	// Missing those shadow routes found it lacked (sorted names).
	Scopes, Missing []string

	ref            slotRef
	scopes, missed uint64
}

// usage is what one request needed of a token's scopes, as masks.
type usage struct{ needed, missing uint64 }

// usageOf is the usage of a request decided r: the route's required
// scopes that the token holds, and, on a shadow route, those it lacks.
func usageOf(s *state, p *Policy, r Result) usage {
	if p == nil || p.required == 0 || r != ResultOK {
		return usage{}
	}
	return usage{needed: p.required & s.effective, missing: p.required &^ s.effective}
}

// pendingUse is a slot's use waiting for the flush: the last one's time
// and client. A slot has at most one per flush (table.epoch).
type pendingUse struct {
	ref    slotRef
	at     int64
	client netip.Addr
}

// FlushUses hands write the uses seen since the last flush, at most chunk
// at a time. If write fails, the uses not written are kept for the next
// flush and its error is returned.
func (v *Verifier) FlushUses(chunk int, write func([]Use) error) error {
	t := v.cur.Load()
	pending := t.takeDirty()
	for len(pending) > 0 {
		n := min(len(pending), chunk)
		uses := t.collectUses(v.grants, pending[:n])
		if err := write(uses); err != nil {
			t.requeue(pending, uses)
			return err
		}
		pending = pending[n:]
	}
	return nil
}

// markUsed records a use at now from client that needed u. It writes the
// slot at most once a second, so a hot token does not bounce its cache
// line between cores on every request, unless the use needed a scope
// not recorded since the last flush. The caller holds the slot's shard
// lock.
func (t *table) markUsed(i uint32, e *tokenSlot, now int64, u usage, client netip.Addr) {
	if now-e.lastUsed.Load() < int64(time.Second) &&
		u.needed&^e.usedScopes.Load() == 0 && u.missing&^e.missingScopes.Load() == 0 {
		return
	}
	e.lastUsed.Store(now)
	if u.needed != 0 {
		e.usedScopes.Or(u.needed)
	}
	if u.missing != 0 {
		e.missingScopes.Or(u.missing)
	}
	t.queueUse(i, e, now, client)
}

// queueUse notes the slot's last use for the next flush: in the entry it
// has already in this flush's queue, or in a new one.
func (t *table) queueUse(i uint32, e *tokenSlot, now int64, client netip.Addr) {
	ref := slotRef{i, e.gen.Load()}
	client = client.WithZone("")
	t.dirtyMu.Lock()
	defer t.dirtyMu.Unlock()
	if q := e.queued; uint32(q>>32) == t.epoch {
		if k := int(uint32(q)) - 1; k >= 0 && k < len(t.dirty) && t.dirty[k].ref == ref {
			if now >= t.dirty[k].at {
				t.dirty[k].at, t.dirty[k].client = now, client
			}
			return
		}
	}
	t.dirty = append(t.dirty, pendingUse{ref: ref, at: now, client: client})
	e.queued = uint64(t.epoch)<<32 | uint64(len(t.dirty))
}

// takeDirty returns and clears the uses waiting for a flush.
func (t *table) takeDirty() []pendingUse {
	t.dirtyMu.Lock()
	defer t.dirtyMu.Unlock()
	d := t.dirty
	t.dirty = nil
	t.epoch++
	return d
}

// requeue puts uses whose flush failed back in the queue, and the scopes
// collected from their slots back in the slots. A slot reused since by
// another token is left out (its generation changed), and one reused
// after this check is skipped by collectUses for the same reason.
func (t *table) requeue(pending []pendingUse, collected []Use) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	for _, u := range collected {
		if e := t.slots.at(u.ref.slot); e.gen.Load() == u.ref.gen {
			e.usedScopes.Or(u.scopes)
			e.missingScopes.Or(u.missed)
		}
	}
	for _, p := range pending {
		if e := t.slots.at(p.ref.slot); e.gen.Load() == p.ref.gen {
			t.queueUse(p.ref.slot, e, p.at, p.client)
		}
	}
}

// collectUses reads the uses of the slots in pending that still hold the
// token they were queued for, taking the scopes they needed. It holds
// writeMu, so no slot is refilled with another token while it reads.
func (t *table) collectUses(g *grants, pending []pendingUse) []Use {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	uses := make([]Use, 0, len(pending))
	for _, p := range pending {
		e := t.slots.at(p.ref.slot)
		if e.gen.Load() != p.ref.gen {
			continue // removed; the slot may hold another token now
		}
		u := Use{
			TokenID:   e.tokenID(),
			Kind:      kindOf(e.kind),
			At:        time.Unix(0, p.at).UTC(),
			ExpiresAt: time.Unix(0, e.expires).UTC(),
			ClientIP:  p.client,
			ref:       p.ref,
			scopes:    e.usedScopes.Swap(0),
			missed:    e.missingScopes.Swap(0),
		}
		u.Scopes, u.Missing = g.nameList(u.scopes), g.nameList(u.missed)
		uses = append(uses, u)
	}
	return uses
}
