package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

func testReadsAndWrites(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	binaryKey := "bin/\x00\x01\xfe\xff"
	binaryVal := string([]byte{0, 1, 2, 0xfe, 0xff})
	update(t, b, func(w kv.Writer) error {
		for _, p := range [][2]string{{"a/1", "one"}, {"a/2", "two"}, {"empty", ""}, {binaryKey, binaryVal}} {
			if err := w.Set(p[0], []byte(p[1]), 0); err != nil {
				return err
			}
		}
		// A transaction reads its own writes.
		if v, found, err := w.Get("a/1"); err != nil || !found || string(v) != "one" {
			return fmt.Errorf("inside the writing transaction Get(a/1) = %q, %v, %v", v, found, err)
		}
		return nil
	})
	for key, want := range map[string]string{"a/1": "one", "a/2": "two", "empty": "", binaryKey: binaryVal} {
		if got, found := get(t, b, key); !found || got != want {
			t.Errorf("Get(%q) = %q, %v; want %q", key, got, found, want)
		}
	}
	if got, found := get(t, b, "missing"); found {
		t.Errorf("Get of a missing key = %q, found", got)
	}

	update(t, b, func(w kv.Writer) error {
		if err := w.Delete("a/1"); err != nil {
			return err
		}
		if err := w.Delete("never/written"); err != nil {
			return fmt.Errorf("deleting a missing key: %w", err)
		}
		if err := w.Set("a/2", []byte("TWO"), 0); err != nil {
			return err
		}
		if _, found, err := w.Get("a/1"); err != nil || found {
			return fmt.Errorf("inside the transaction, a deleted key: found %v, %v", found, err)
		}
		return nil
	})
	if _, found := get(t, b, "a/1"); found {
		t.Error("a deleted key is still there")
	}
	if got, _ := get(t, b, "a/2"); got != "TWO" {
		t.Errorf("an overwritten key reads %q", got)
	}

	// A value read stays valid after its transaction.
	var kept []byte
	view(t, b, func(r kv.Reader) error {
		var err error
		kept, _, err = r.Get("a/2")
		return err
	})
	set(t, b, "a/2", "changed")
	if string(kept) != "TWO" {
		t.Errorf("a value read before a later write now reads %q", kept)
	}
}

func testFailedUpdateWritesNothing(t *testing.T, h Harness) {
	rec := new(Recorder)
	b := h.NewDatabase(t).Open(t, rec)
	set(t, b, "kept", "before")
	mistake := errors.New("the rules refused")
	err := b.Update(context.Background(), func(w kv.Writer) error {
		if err := w.Set("kept", []byte("after"), 0); err != nil {
			return err
		}
		if err := w.Set("new", []byte("x"), 0); err != nil {
			return err
		}
		w.Publish("new", nil)
		return mistake
	})
	if !errors.Is(err, mistake) {
		t.Fatalf("Update returned %v; want the error fn returned", err)
	}
	if got, _ := get(t, b, "kept"); got != "before" {
		t.Errorf("a failed update changed a key to %q", got)
	}
	if _, found := get(t, b, "new"); found {
		t.Error("a failed update wrote a key")
	}
	if c := rec.Changes(); len(c) != 0 {
		t.Errorf("a failed update published %+v", c)
	}
}

func testGetMany(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	set(t, b, "g/1", "one", "g/2", "two")
	keys := []string{"g/1", "g/missing", "g/2", "g/1"}
	check := func(r kv.Reader, want map[int]string) error {
		got := map[int]string{}
		err := r.GetMany(keys, func(i int, val []byte) error {
			if _, twice := got[i]; twice {
				return fmt.Errorf("GetMany called back twice for position %d", i)
			}
			got[i] = string(val)
			return nil
		})
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("GetMany(%q) = %v; want %v", keys, got, want)
		}
		return r.GetMany(nil, func(int, []byte) error { return errors.New("GetMany of no keys called back") })
	}
	view(t, b, func(r kv.Reader) error { return check(r, map[int]string{0: "one", 2: "two", 3: "one"}) })
	update(t, b, func(w kv.Writer) error {
		if err := w.Set("g/missing", []byte("now"), 0); err != nil {
			return err
		}
		if err := w.Delete("g/2"); err != nil {
			return err
		}
		return check(w, map[int]string{0: "one", 1: "now", 3: "one"}) // its own writes
	})
}

func testScanOrderAndPrefixes(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	all := []string{"o", "p", "p/", "p/a", "p/a/b", "p/b", "p/\xff", "p/\xff\xff", "p\xff", "q"}
	shuffled := slices.Clone(all)
	slices.Reverse(shuffled)
	var pairs []string
	for _, k := range shuffled {
		pairs = append(pairs, k, "v:"+k)
	}
	set(t, b, pairs...)

	under := []string{"p/", "p/a", "p/a/b", "p/b", "p/\xff", "p/\xff\xff"}
	keys, vals := scan(t, b, "p/", kv.ScanOptions{})
	if !slices.Equal(keys, under) {
		t.Errorf("Scan(p/) = %q; want %q in byte order", keys, under)
	}
	for i, k := range keys {
		if i >= len(vals) || vals[i] != "v:"+k {
			t.Fatalf("Scan(p/) values %q do not match keys %q", vals, keys)
		}
	}
	reversed := slices.Clone(under)
	slices.Reverse(reversed)
	if keys, _ := scan(t, b, "p/", kv.ScanOptions{Reverse: true}); !slices.Equal(keys, reversed) {
		t.Errorf("Scan(p/, Reverse) = %q; want %q", keys, reversed)
	}
	if keys, vals := scan(t, b, "p/", kv.ScanOptions{KeysOnly: true}); !slices.Equal(keys, under) || len(vals) != 0 {
		t.Errorf("Scan(p/, KeysOnly) = %q with values %q; want %q without values", keys, vals, under)
	}
	if keys, _ := scan(t, b, "", kv.ScanOptions{}); !slices.Equal(keys, all) {
		t.Errorf("Scan of everything = %q; want %q", keys, all)
	}
	if keys, _ := scan(t, b, "x/", kv.ScanOptions{}); len(keys) != 0 {
		t.Errorf("Scan of an empty prefix = %q", keys)
	}
}

func testScanBounds(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	var pairs []string
	for i := range 10 {
		pairs = append(pairs, fmt.Sprintf("b/%02d", i), "")
	}
	set(t, b, append(pairs, "a", "", "c", "")...)
	span := func(from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, fmt.Sprintf("b/%02d", i))
		}
		if from > to {
			for i := from; i >= to; i-- {
				out = append(out, fmt.Sprintf("b/%02d", i))
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		o    kv.ScanOptions
		want []string
	}{
		{"From", kv.ScanOptions{From: "b/03"}, span(3, 9)},
		{"From, not a key", kv.ScanOptions{From: "b/035"}, span(4, 9)},
		{"To", kv.ScanOptions{To: "b/06"}, span(0, 5)},
		{"From and To", kv.ScanOptions{From: "b/03", To: "b/06"}, span(3, 5)},
		{"To past the prefix", kv.ScanOptions{To: kv.PrefixEnd("b/")}, span(0, 9)},
		{"Reverse from the end", kv.ScanOptions{Reverse: true}, span(9, 0)},
		{"Reverse From", kv.ScanOptions{Reverse: true, From: "b/06"}, span(6, 0)},
		{"Reverse From, not a key", kv.ScanOptions{Reverse: true, From: "b/065"}, span(6, 0)},
	} {
		if keys, _ := scan(t, b, "b/", c.o); !slices.Equal(keys, c.want) {
			t.Errorf("%s: Scan(b/, %+v) = %q; want %q", c.name, c.o, keys, c.want)
		}
	}
}

// A prefix with more keys than any page a backend reads at once.
func testScanManyKeys(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	const n = 3000
	var want []string
	update(t, b, func(w kv.Writer) error {
		for i := range n {
			k := fmt.Sprintf("m/%05d", i)
			if err := w.Set(k, []byte(k), 0); err != nil {
				return err
			}
		}
		return nil
	})
	for i := range n {
		want = append(want, fmt.Sprintf("m/%05d", i))
	}
	keys, vals := scan(t, b, "m/", kv.ScanOptions{})
	if !slices.Equal(keys, want) || !slices.Equal(vals, want) {
		t.Fatalf("Scan of %d keys returned %d keys, %d values, or out of order", n, len(keys), len(vals))
	}
	slices.Reverse(want)
	if keys, _ := scan(t, b, "m/", kv.ScanOptions{Reverse: true, KeysOnly: true}); !slices.Equal(keys, want) {
		t.Fatalf("reverse Scan of %d keys returned %d keys, or out of order", n, len(keys))
	}
	if keys, _ := scan(t, b, "m/", kv.ScanOptions{From: "m/01000", To: "m/02500"}); len(keys) != 1500 || keys[0] != "m/01000" || keys[1499] != "m/02499" {
		t.Fatalf("bounded Scan returned %d keys", len(keys))
	}
}

func testScanStopsEarly(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	set(t, b, "s/1", "", "s/2", "", "s/3", "", "s/4", "")
	visited := 0
	view(t, b, func(r kv.Reader) error {
		return r.Scan("s/", kv.ScanOptions{}, func(_, _ []byte) error {
			visited++
			if visited == 2 {
				return kv.ErrStopScan
			}
			return nil
		})
	})
	if visited != 2 {
		t.Errorf("after ErrStopScan the scan visited %d keys; want 2", visited)
	}
	mistake := errors.New("the rules refused")
	err := b.View(context.Background(), func(r kv.Reader) error {
		return r.Scan("s/", kv.ScanOptions{Reverse: true}, func(_, _ []byte) error { return mistake })
	})
	if !errors.Is(err, mistake) {
		t.Errorf("a scan callback's error came back as %v", err)
	}
}

// A key written with a TTL is there until its TTL has passed and gone
// within ExpiryWithin after; a key without one, or whose TTL a later
// write removed, stays.
func testTTL(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	ttl := time.Second
	update(t, b, func(w kv.Writer) error {
		for _, s := range []struct {
			key string
			ttl time.Duration
		}{{"t/short", ttl}, {"t/kept", 0}, {"t/long", time.Hour}, {"t/renewed", ttl}} {
			if err := w.Set(s.key, []byte("x"), s.ttl); err != nil {
				return err
			}
		}
		return nil
	})
	written := time.Now()
	update(t, b, func(w kv.Writer) error { return w.Set("t/renewed", []byte("y"), 0) })
	time.Sleep(time.Until(written.Add(ttl - 150*time.Millisecond)))
	if _, found := get(t, b, "t/short"); !found && time.Since(written) < ttl {
		t.Fatalf("a key is gone %v after it was written with a TTL of %v", time.Since(written), ttl)
	}
	eventually(t, ttl+h.ExpiryWithin, "a key whose TTL has passed is gone", func() bool {
		_, found := get(t, b, "t/short")
		return !found
	})
	for _, key := range []string{"t/kept", "t/long", "t/renewed"} {
		if _, found := get(t, b, key); !found {
			t.Errorf("%s is gone", key)
		}
	}
}

// A backend whose readers tell expiries (kv.ExpiryScanner, which a copy
// between databases needs to keep TTLs) tells the time a key may be
// collected, to the second, and none for a key without a TTL.
func testScanExpiry(t *testing.T, h Harness) {
	b := h.NewDatabase(t).Open(t, new(Recorder))
	before := time.Now()
	update(t, b, func(w kv.Writer) error {
		if err := w.Set("x/hour", []byte("1"), time.Hour); err != nil {
			return err
		}
		return w.Set("x/kept", []byte("2"), 0)
	})
	after := time.Now()
	got := map[string]time.Time{}
	tells := false
	view(t, b, func(r kv.Reader) error {
		es, ok := r.(kv.ExpiryScanner)
		if tells = ok; !ok {
			return nil
		}
		return es.ScanExpiry("x/", kv.ScanOptions{}, func(key, _ []byte, at time.Time) error {
			got[string(key)] = at
			return nil
		})
	})
	if !tells {
		t.Skip("this backend's readers do not tell expiries; a copy from it drops TTLs")
	}
	if at := got["x/hour"]; at.Before(before.Add(time.Hour-time.Second)) || at.After(after.Add(time.Hour+2*time.Second)) {
		t.Errorf("x/hour, written with a TTL of 1h between %v and %v, expires at %v", before, after, at)
	}
	if at, found := got["x/kept"]; !found || !at.IsZero() {
		t.Errorf("x/kept, written without a TTL: expiry %v (scanned: %v); want the zero time", at, found)
	}
}
