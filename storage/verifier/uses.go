package verifier

import (
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Use is the last use of a token that this node saw and has not handed to
// FlushUses yet.
type Use struct {
	TokenID   string
	Kind      secret.Kind
	At        time.Time
	ExpiresAt time.Time // the token's, so a temporary token's record can expire with it
}

// FlushUses hands write the uses seen since the last flush, at most chunk
// at a time. If write fails, the uses not written are kept for the next
// flush and its error is returned.
func (v *Verifier) FlushUses(chunk int, write func([]Use) error) error {
	t := v.cur.Load()
	dirty := t.takeDirty()
	for len(dirty) > 0 {
		n := min(len(dirty), chunk)
		if err := write(t.collectUses(dirty[:n])); err != nil {
			t.requeue(dirty)
			return err
		}
		dirty = dirty[n:]
	}
	return nil
}

// markUsed records a use at now. It writes the slot at most once a
// second, so a hot token does not bounce its cache line between cores on
// every request, and queues the slot for the next flush once per flush.
// The caller holds the slot's shard lock.
func (t *table) markUsed(i uint32, e *tokenSlot, now int64) {
	if now-e.lastUsed.Load() < int64(time.Second) {
		return
	}
	e.lastUsed.Store(now)
	if !e.dirty.Swap(true) {
		t.dirtyMu.Lock()
		t.dirty = append(t.dirty, slotRef{i, e.gen.Load()})
		t.dirtyMu.Unlock()
	}
}

// takeDirty returns and clears the slots waiting for a flush.
func (t *table) takeDirty() []slotRef {
	t.dirtyMu.Lock()
	defer t.dirtyMu.Unlock()
	d := t.dirty
	t.dirty = nil
	return d
}

// requeue puts slots whose flush failed back in the queue. A slot reused
// since by another token is left out (its generation changed), and one
// reused after this check is skipped by collectUses for the same reason.
func (t *table) requeue(refs []slotRef) {
	t.dirtyMu.Lock()
	defer t.dirtyMu.Unlock()
	for _, r := range refs {
		if e := t.slots.at(r.slot); e.gen.Load() == r.gen {
			e.dirty.Store(true)
			t.dirty = append(t.dirty, r)
		}
	}
}

// collectUses reads the uses of the slots in refs that still hold the
// token they were queued for. It holds writeMu, so no slot is refilled
// with another token while it reads.
func (t *table) collectUses(refs []slotRef) []Use {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	uses := make([]Use, 0, len(refs))
	for _, r := range refs {
		e := t.slots.at(r.slot)
		if e.gen.Load() != r.gen {
			continue // removed; the slot may hold another token now
		}
		e.dirty.Store(false) // before reading, so a later use re-queues it
		uses = append(uses, Use{
			TokenID:   e.tokenID(),
			Kind:      kindOf(e.kind),
			At:        time.Unix(0, e.lastUsed.Load()).UTC(),
			ExpiresAt: time.Unix(0, e.expires).UTC(),
		})
	}
	return uses
}
