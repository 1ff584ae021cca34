package storagetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// deliveryWithin bounds how long a change takes to reach another handle
// in these tests. It is generous: the tests check that changes arrive,
// whole and in order; the fleet's end-to-end tests measure how fast.
const deliveryWithin = 5 * time.Second

// What a transaction publishes reaches the writing handle's subscriber
// before Update returns: once per commit, with the key's value as
// committed (the last occurrence of a key is its newest), the hint it was
// published with, and Found false for a deleted key. A transaction that
// publishes nothing applies nothing.
func testPublishDeliveredOnceInOrder(t *testing.T, h Harness) {
	rec := new(Recorder)
	b := h.NewDatabase(t).Open(t, rec)
	update(t, b, func(w kv.Writer) error {
		for _, s := range [][2]string{{"k/1", "first"}, {"k/2", "two"}, {"k/1", "final"}} {
			if err := w.Set(s[0], []byte(s[1]), 0); err != nil {
				return err
			}
			w.Publish(s[0], []byte("hint of "+s[0]))
		}
		return w.Set("k/unpublished", []byte("x"), 0)
	})
	// Before Update returned: no waiting.
	if got := rec.State(); got["k/1"] != "final" || got["k/2"] != "two" {
		t.Fatalf("after Update returned the subscriber holds %q", got)
	}
	if _, found := rec.State()["k/unpublished"]; found {
		t.Fatal("an unpublished key was delivered")
	}
	for _, c := range rec.Changes() {
		if c.Key == "k/1" && !c.Found || string(c.Hint) != "hint of "+c.Key {
			t.Fatalf("delivered %+v", c)
		}
	}

	update(t, b, func(w kv.Writer) error {
		if err := w.Delete("k/2"); err != nil {
			return err
		}
		w.Publish("k/2", []byte("deleted"))
		return nil
	})
	changes := rec.Changes()
	last := changes[len(changes)-1]
	if last.Key != "k/2" || last.Found || string(last.Hint) != "deleted" {
		t.Fatalf("the deletion was delivered as %+v", last)
	}
	if _, found := rec.State()["k/2"]; found {
		t.Fatal("a deleted key is still in the subscriber's state")
	}
	set(t, b, "k/3", "unpublished")
	if n := len(rec.Changes()); n != len(changes) {
		t.Fatalf("a transaction that published nothing delivered %d changes", n-len(changes))
	}
}

// A handle subscribed while another keeps writing misses nothing: its
// snapshot and the changes after it add up to what the database holds.
// On a backend that is not a Fleet, a handle opened again starts from a
// snapshot of everything written before.
func testSubscribeThenCatchUp(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	writer := db.Open(t, new(Recorder))
	set(t, writer, "c/before", "x")
	if !h.Fleet {
		if err := writer.Close(); err != nil {
			t.Fatal(err)
		}
		rec := new(Recorder)
		db.Open(t, rec)
		if got := rec.State(); got["c/before"] != "x" {
			t.Fatalf("a handle opened again starts from %q", got)
		}
		return
	}
	stop := make(chan struct{})
	var written atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("c/%04d", i)
			err := writer.Update(context.Background(), func(w kv.Writer) error {
				if err := w.Set(key, []byte(strconv.Itoa(i)), 0); err != nil {
					return err
				}
				w.Publish(key, nil)
				return nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
	})
	eventually(t, deliveryWithin, "the writer writes", func() bool { return written.Load() > 5 })
	rec := new(Recorder)
	db.Open(t, rec)
	eventually(t, deliveryWithin, "the writer writes after the subscription", func() bool { return written.Load() > 40 })
	close(stop)
	wg.Wait()
	want := map[string]string{}
	keys, vals := scan(t, writer, "", kv.ScanOptions{})
	for i, k := range keys {
		want[k] = vals[i]
	}
	eventually(t, deliveryWithin, "the new handle holds every key", func() bool { return maps.Equal(rec.State(), want) })
}

// Every call on a closed handle returns kv.ErrClosed, and closing again
// is harmless.
func testClosedHandle(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.View(context.Background(), func(kv.Reader) error { return nil }); !errors.Is(err, kv.ErrClosed) {
		t.Errorf("View after Close = %v", err)
	}
	if err := b.Update(context.Background(), func(kv.Writer) error { return nil }); !errors.Is(err, kv.ErrClosed) {
		t.Errorf("Update after Close = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("a second Close = %v", err)
	}
}

// A change committed on one handle reaches the others.
func testFeedReachesEveryHandle(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	recA, recB := new(Recorder), new(Recorder)
	a, b := db.Open(t, recA), db.Open(t, recB)
	publish(t, a, "f/1", "from a")
	eventually(t, deliveryWithin, "a change made on one handle reaches the other", func() bool { return recB.State()["f/1"] == "from a" })
	update(t, b, func(w kv.Writer) error {
		if err := w.Delete("f/1"); err != nil {
			return err
		}
		w.Publish("f/1", []byte("hint"))
		return nil
	})
	eventually(t, deliveryWithin, "a deletion made on one handle reaches the other", func() bool {
		_, found := recA.State()["f/1"]
		return !found
	})
}

// publish sets key to val and publishes it.
func publish(t *testing.T, b kv.Backend, key, val string) {
	t.Helper()
	update(t, b, func(w kv.Writer) error {
		if err := w.Set(key, []byte(val), 0); err != nil {
			return err
		}
		w.Publish(key, nil)
		return nil
	})
}

// Two handles take turns writing one key; a third sees its values only
// ever grow, and ends with the last.
func testFeedKeepsCommitOrderAcrossHandles(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	writers := []kv.Backend{db.Open(t, new(Recorder)), db.Open(t, new(Recorder))}
	seen := &orderWatch{}
	db.Open(t, seen)
	const n = 60
	for i := 1; i <= n; i++ {
		publish(t, writers[i%2], "o/key", fmt.Sprintf("%03d", i))
	}
	eventually(t, deliveryWithin, "the last value reaches the third handle", func() bool { return seen.State()["o/key"] == fmt.Sprintf("%03d", n) })
	if seen.wentBack.Load() {
		t.Fatalf("the third handle saw the key's value go back: %s", seen.history())
	}
}

// orderWatch is a Recorder that notes whether the value of o/key ever
// went back.
type orderWatch struct {
	Recorder
	mu       sync.Mutex
	last     string
	all      []string
	wentBack atomic.Bool
}

func (o *orderWatch) Apply(changes []kv.Change) {
	o.mu.Lock()
	for _, c := range changes {
		if c.Key == "o/key" {
			v := string(c.Value)
			o.all = append(o.all, v)
			if v < o.last {
				o.wentBack.Store(true)
			}
			o.last = v
		}
	}
	o.mu.Unlock()
	o.Recorder.Apply(changes)
}

func (o *orderWatch) history() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprint(o.all)
}

// A handle whose feed cannot read the changes it missed (they were
// pruned) reloads everything, and then holds what the database holds.
func testResetAfterPrunedChanges(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	writer := db.Open(t, new(Recorder))
	rec := new(Recorder)
	db.Open(t, rec)
	publish(t, writer, "r/1", "one")
	eventually(t, deliveryWithin, "the change arrives", func() bool { return rec.State()["r/1"] == "one" })
	resets := rec.Resets()

	set(t, writer, "r/2", "written where no feed can read it")
	db.PruneChanges(t)
	eventually(t, deliveryWithin, "the handle reloads", func() bool { return rec.Resets() > resets })
	if got := rec.State(); got["r/2"] != "written where no feed can read it" {
		t.Fatalf("after the reload the handle holds %q", got)
	}
	publish(t, writer, "r/3", "after")
	eventually(t, deliveryWithin, "changes after the reload arrive", func() bool { return rec.State()["r/3"] == "after" })
}
