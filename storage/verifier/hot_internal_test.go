package verifier

import (
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Tokens in use keep their seats: a third token whose two seats are both
// taken by tokens used within hotSeatKept takes the locked path instead
// of evicting one (which would make them trade places, allocating, on
// every request), and gets a seat once one is no longer used.
func TestHotTableKeepsTokensInUseSeated(t *testing.T) {
	h := &hotTable{seed: maphash.MakeSeed()}
	sameSeats := threeSecretsWithTheSameSeats(h)
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC).UnixNano()
	user := &userState{name: "alice"}
	slots := make([]tokenSlot, len(sameSeats))
	entries := make([]*hotEntry, len(sameSeats))
	for i := range slots {
		slots[i].lastUsed.Store(now)
		entries[i] = &hotEntry{slot: &slots[i], user: user, tokenID: "tok_" + sameSeats[i][:4], expires: now + int64(time.Hour)}
	}
	seated := func(want ...bool) {
		t.Helper()
		for i, w := range want {
			if got := h.find(sameSeats[i]) != nil; got != w {
				t.Fatalf("token %d seated: %v; want %v", i, got, w)
			}
		}
	}

	h.put(sameSeats[0], entries[0], now)
	h.put(sameSeats[1], entries[1], now)
	h.put(sameSeats[2], entries[2], now)
	seated(true, true, false)
	if a := testing.AllocsPerRun(100, func() {
		h.put(sameSeats[2], entries[2], now) // no seat
		h.put(sameSeats[0], entries[0], now) // seated already
	}); a != 0 {
		t.Fatalf("putting a token with no free seat or one seated already allocates %.0f times", a)
	}

	slots[0].lastUsed.Store(now - int64(hotSeatKept)) // token 0 no longer in use
	h.put(sameSeats[2], entries[2], now)
	seated(false, true, true)

	slots[1].gen.Add(1) // token 1 left the index: its seat is free at once
	h.put(sameSeats[0], entries[0], now)
	seated(true, false, true)
}

// threeSecretsWithTheSameSeats draws secrets until three share their
// seats (about 750 draws for 8,192 sets).
func threeSecretsWithTheSameSeats(h *hotTable) []string {
	bySet := map[*[hotWays]atomic.Pointer[hotEntry]][]string{}
	for {
		s := secret.New(secret.Permanent)
		set := h.set(s)
		bySet[set] = append(bySet[set], s)
		if len(bySet[set]) == 3 {
			return bySet[set]
		}
	}
}

// sameSecret finds every difference, wherever it is: a low or a high bit
// in any byte of any of its eight-byte words, and a secret of another
// length.
func TestSameSecretSeesEveryByte(t *testing.T) {
	sec := secret.New(secret.Permanent)
	var held [secret.Len]byte
	copy(held[:], sec)
	if !sameSecret(&held, sec) {
		t.Fatal("a secret differs from itself")
	}
	for i := range secret.Len {
		for _, bit := range []byte{0x01, 0x80} {
			other := []byte(sec)
			other[i] ^= bit
			if sameSecret(&held, string(other)) {
				t.Fatalf("byte %d flipped by %#x: still the same secret", i, bit)
			}
		}
	}
	for _, other := range []string{"", sec[:secret.Len-1], sec + "x"} {
		if sameSecret(&held, other) {
			t.Fatalf("a secret of %d bytes is the same as one of %d", len(other), secret.Len)
		}
	}
}
