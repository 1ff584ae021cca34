package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Leases let one node of a fleet at a time do work that must not run
// twice, such as sending the expiry emails. A lease is a row, not a lock
// held by a connection: it is taken and renewed in ordinary transactions
// and expires on its own when its holder stops renewing it (it crashed,
// or lost the database), so nothing depends on a session that a
// connection pool might recycle or hand to someone else. Every new holder
// gets a higher epoch, and the leader's writes are fenced: they check, in
// their own transaction, that the lease is still theirs, so a leader that
// paused past its lease (a long GC, a frozen VM) cannot overwrite its
// successor's work.

// Lease is a lease as its holder knows it.
type Lease struct {
	Name    string    `json:"-"`
	Holder  string    `json:"holder"`
	Epoch   uint64    `json:"epoch"`
	Expires time.Time `json:"expires"`
}

// ErrLeaseLost is returned by a fenced write whose lease is no longer
// held by the writer.
var ErrLeaseLost = errors.New("storage: the lease is held by another node")

// AcquireLease takes the named lease for holder for ttl, or renews it if
// holder has it. It reports false, with the current lease, when another
// holder has it and it has not expired.
func (a Alerting) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, bool, error) {
	var got Lease
	var ok bool
	err := a.s.update(ctx, func(w *writeTxn) error {
		cur, found, err := readLease(w, name)
		if err != nil {
			return err
		}
		if found && cur.Holder != "" && cur.Holder != holder && w.now.Before(cur.Expires) {
			got, ok = cur, false
			return nil
		}
		next := Lease{Name: name, Holder: holder, Epoch: cur.Epoch, Expires: w.now.Add(ttl)}
		if !found || cur.Holder != holder {
			next.Epoch++
		}
		got, ok = next, true
		return putLease(w, next)
	})
	return got, ok, err
}

// ReleaseLease gives the lease up at once, if l's holder still has it, so
// another node need not wait for it to expire. It is ended, not deleted,
// so the next holder's epoch is still higher; and it is left without a
// holder, so it is free whatever the next node's clock says (one behind
// the releaser's would otherwise see it running on).
func (a Alerting) ReleaseLease(ctx context.Context, l Lease) error {
	return a.s.update(ctx, func(w *writeTxn) error {
		cur, found, err := readLease(w, l.Name)
		if err != nil || !found || cur.Holder != l.Holder || cur.Epoch != l.Epoch {
			return err
		}
		cur.Holder, cur.Expires = "", w.now
		return putLease(w, cur)
	})
}

func putLease(w *writeTxn, l Lease) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return set(w, leaseKey(l.Name), b)
}

func readLease(r kv.Reader, name string) (Lease, bool, error) {
	val, found, err := getValue(r, leaseKey(name))
	if err != nil || !found {
		return Lease{Name: name}, false, err
	}
	var l Lease
	if err := json.Unmarshal(val, &l); err != nil {
		return Lease{}, false, fmt.Errorf("storage: corrupt lease %q: %w", name, err)
	}
	l.Name = name
	return l, true, nil
}

// checkLease fails with ErrLeaseLost unless l is still the current,
// unexpired lease; fenced writes call it in their transaction.
func checkLease(w *writeTxn, l Lease) error {
	cur, found, err := readLease(w, l.Name)
	if err != nil {
		return err
	}
	if !found || cur.Holder != l.Holder || cur.Epoch != l.Epoch || !w.now.Before(cur.Expires) {
		return fmt.Errorf("%w: lease %q (epoch %d) has passed to another holder or expired", ErrLeaseLost, l.Name, l.Epoch)
	}
	return nil
}
