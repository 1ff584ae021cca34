package storagetest

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// handles opens n handles on db, one per node if the backend is a Fleet,
// else one shared by all.
func handles(t *testing.T, h Harness, db Database, n int) []kv.Backend {
	out := make([]kv.Backend, n)
	for i := range out {
		if i == 0 || h.Fleet {
			out[i] = db.Open(t, new(Recorder))
		} else {
			out[i] = out[0]
		}
	}
	return out
}

// NextSeq never returns a number twice, on any handle, however many
// transactions ask at once; and what one caller gets, within a
// transaction and from one transaction to its next, grows.
func testNextSeq(t *testing.T, h Harness) {
	nodes := handles(t, h, h.NewDatabase(t), 2)
	const callers, txns, perTxn = 4, 20, 3
	got := make([][]uint64, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			b := nodes[c%len(nodes)]
			for range txns {
				var these []uint64
				err := b.Update(t.Context(), func(w kv.Writer) error {
					these = these[:0] // an attempt that lost a conflict returned nothing
					for range perTxn {
						n, err := w.NextSeq()
						if err != nil {
							return err
						}
						these = append(these, n)
					}
					return w.Set(fmt.Sprintf("seq/%d", c), nil, 0)
				})
				if err != nil {
					t.Error(err)
					return
				}
				got[c] = append(got[c], these...)
			}
		})
	}
	wg.Wait()
	seen := map[uint64]int{}
	for c, nums := range got {
		if !slices.IsSorted(nums) || len(slices.Compact(slices.Clone(nums))) != len(nums) {
			t.Errorf("caller %d got %v: not growing", c, nums)
		}
		for _, n := range nums {
			if other, dup := seen[n]; dup {
				t.Fatalf("NextSeq returned %d to callers %d and %d", n, other, c)
			}
			seen[n] = c
		}
	}
}

// NextSeq's numbers keep growing when the database is opened again.
func testNextSeqAfterReopen(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	next := func(b kv.Backend) (n uint64) {
		update(t, b, func(w kv.Writer) (err error) {
			n, err = w.NextSeq()
			return err
		})
		return n
	}
	b := db.Open(t, new(Recorder))
	before := next(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if after := next(db.Open(t, new(Recorder))); after <= before {
		t.Fatalf("after reopening NextSeq returned %d; before, %d", after, before)
	}
}

// Concurrent read-modify-write transactions on one key, from several
// handles on a Fleet backend, lose no update: each is serializable, and
// a backend that runs one again after a conflict (as it may) commits only
// its last attempt.
func testSerializableUpdates(t *testing.T, h Harness) {
	nodes := handles(t, h, h.NewDatabase(t), 2)
	const workers, increments = 4, 15
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for range increments {
				err := nodes[i%len(nodes)].Update(t.Context(), func(w kv.Writer) error {
					attempts.Add(1)
					val, _, err := w.Get("counter")
					if err != nil {
						return err
					}
					var n uint64
					if len(val) == 8 {
						n = binary.BigEndian.Uint64(val)
					}
					return w.Set("counter", binary.BigEndian.AppendUint64(nil, n+1), 0)
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	val, _ := get(t, nodes[0], "counter")
	if n := binary.BigEndian.Uint64([]byte(val)); n != workers*increments {
		t.Fatalf("counter = %d after %d increments (%d attempts): updates were lost", n, workers*increments, attempts.Load())
	}
	t.Logf("%d increments took %d attempts", workers*increments, attempts.Load())
}

// The backend's own bookkeeping (a sequence's last number, say) never
// shows among the keys: a scan of everything returns exactly what was
// written, before and after the database is opened again.
func testOnlyTheRulesKeys(t *testing.T, h Harness) {
	db := h.NewDatabase(t)
	b := db.Open(t, new(Recorder))
	update(t, b, func(w kv.Writer) error {
		for range 3 {
			if _, err := w.NextSeq(); err != nil {
				return err
			}
		}
		if err := w.Set("a", []byte("1"), 0); err != nil {
			return err
		}
		return w.Set("b/c", []byte("2"), 0)
	})
	want := []string{"a", "b/c"}
	if keys, _ := scan(t, b, "", kv.ScanOptions{}); !slices.Equal(keys, want) {
		t.Fatalf("Scan of everything = %q; want only %q", keys, want)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = db.Open(t, new(Recorder))
	if keys, _ := scan(t, b, "", kv.ScanOptions{Reverse: true}); !slices.Equal(keys, []string{"b/c", "a"}) {
		t.Fatalf("after reopening, a reverse Scan of everything = %q", keys)
	}
}
