package verifier

// endItem and endHeap are a min-heap of slots by end time, written out
// so pushes do not box values in interfaces.
type endItem struct {
	end int64
	ref slotRef
}

type endHeap []endItem

func (h *endHeap) push(it endItem) {
	*h = append(*h, it)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].end <= s[i].end {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *endHeap) pop() endItem {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = endItem{}
	s = s[:last]
	h.down(s, 0)
	*h = s
	return top
}

func (*endHeap) down(s endHeap, i int) {
	for {
		l := 2*i + 1
		if l >= len(s) {
			return
		}
		m := l
		if r := l + 1; r < len(s) && s[r].end < s[l].end {
			m = r
		}
		if s[i].end <= s[m].end {
			return
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
}

// init orders a heap built by appending, in O(n).
func (h *endHeap) init() {
	s := *h
	for i := len(s)/2 - 1; i >= 0; i-- {
		h.down(s, i)
	}
}
