package verifier

import (
	"sync"
	"sync/atomic"
)

// chunkLen is how many elements one chunk of an arena holds.
const chunkLen = 4096

// arena is a growable array of T numbered by uint32 whose elements
// never move: it grows by whole chunks, and the directory of chunks is
// replaced (copy on write) rather than appended to in place, so a reader
// can index it without a lock while a writer grows it. A number must be
// published to readers (through a lock) after alloc returns it.
//
// For the token slots T has no pointers, so a million tokens are a few
// hundred chunks the garbage collector never scans.
type arena[T any] struct {
	mu   sync.Mutex // guards next, free and growing dir
	dir  atomic.Pointer[[]*[chunkLen]T]
	next uint32   // numbers below next have been handed out
	free []uint32 // released numbers, reused first
}

// at returns element i; i must have come from alloc.
func (t *arena[T]) at(i uint32) *T {
	return &(*t.dir.Load())[i/chunkLen][i%chunkLen]
}

// alloc returns an unused number, growing the table if needed. The
// element keeps whatever its last user left in it.
func (t *arena[T]) alloc() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		return i
	}
	i := t.next
	if i == ^uint32(0) {
		// 4 billion live elements: memory runs out long before this.
		panic("verifier: arena full")
	}
	t.next++
	var dir []*[chunkLen]T
	if d := t.dir.Load(); d != nil {
		dir = *d
	}
	if int(i/chunkLen) == len(dir) {
		grown := make([]*[chunkLen]T, len(dir)+1)
		copy(grown, dir)
		grown[len(dir)] = new([chunkLen]T)
		t.dir.Store(&grown)
	}
	return i
}

// release makes i available to alloc again. Nobody may read element i
// after its release without checking that it still holds what they expect.
func (t *arena[T]) release(i uint32) {
	t.mu.Lock()
	t.free = append(t.free, i)
	t.mu.Unlock()
}
