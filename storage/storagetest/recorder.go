package storagetest

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Recorder is a kv.Subscriber that keeps what the feed tells it: the last
// snapshot and every change applied since, so a test can tell what the
// handle's memory would hold.
type Recorder struct {
	mu       sync.Mutex
	resets   int
	snapshot map[string]string
	changes  []kv.Change
}

// Reset keeps a copy of every key of the snapshot.
func (r *Recorder) Reset(rd kv.Reader, _ bool) error {
	snap := map[string]string{}
	err := rd.Scan("", kv.ScanOptions{}, func(key, val []byte) error {
		snap[string(key)] = string(val)
		return nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets++
	r.snapshot, r.changes = snap, nil
	return nil
}

// Apply keeps a copy of the changes.
func (r *Recorder) Apply(changes []kv.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range changes {
		c.Hint = append([]byte(nil), c.Hint...)
		c.Value = append([]byte(nil), c.Value...)
		r.changes = append(r.changes, c)
	}
}

// State is what the handle knows: the snapshot with the changes applied
// in the order they came.
func (r *Recorder) State() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := maps.Clone(r.snapshot)
	for _, c := range r.changes {
		if c.Found {
			state[c.Key] = string(c.Value)
		} else {
			delete(state, c.Key)
		}
	}
	return state
}

// Changes returns the changes applied since the last Reset.
func (r *Recorder) Changes() []kv.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]kv.Change(nil), r.changes...)
}

// Resets counts the snapshots the feed gave.
func (r *Recorder) Resets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resets
}

// update runs fn in a transaction of b and fails the test if it fails.
func update(t *testing.T, b kv.Backend, fn func(w kv.Writer) error) {
	t.Helper()
	if err := b.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in a read transaction of b and fails the test if it fails.
func view(t *testing.T, b kv.Backend, fn func(r kv.Reader) error) {
	t.Helper()
	if err := b.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// set writes key=value pairs in one transaction.
func set(t *testing.T, b kv.Backend, pairs ...string) {
	t.Helper()
	update(t, b, func(w kv.Writer) error {
		for i := 0; i < len(pairs); i += 2 {
			if err := w.Set(pairs[i], []byte(pairs[i+1]), 0); err != nil {
				return err
			}
		}
		return nil
	})
}

// get reads key in a transaction of its own.
func get(t *testing.T, b kv.Backend, key string) (string, bool) {
	t.Helper()
	var val []byte
	var found bool
	view(t, b, func(r kv.Reader) error {
		var err error
		val, found, err = r.Get(key)
		return err
	})
	return string(val), found
}

// scan returns the keys and values a scan visits, in its order.
func scan(t *testing.T, b kv.Backend, prefix string, o kv.ScanOptions) (keys, vals []string) {
	t.Helper()
	view(t, b, func(r kv.Reader) error {
		return r.Scan(prefix, o, func(key, val []byte) error {
			keys = append(keys, string(key))
			if val != nil {
				vals = append(vals, string(val))
			}
			return nil
		})
	})
	return keys, vals
}

// eventually waits up to limit for cond.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}
