package secret

import (
	"crypto/rand"
	"hash/crc32"
	"strings"
	"testing"
)

func TestNewSecretRoundTrip(t *testing.T) {
	for _, kind := range []Kind{Permanent, Temporary} {
		s := New(kind)
		if len(s) != Len {
			t.Fatalf("len(%q) = %d, want %d", s, len(s), Len)
		}
		got, ok := Parse(s)
		if !ok || got != kind {
			t.Fatalf("Parse(%q) = %v, %v; want %v, true", s, got, ok, kind)
		}
	}
	if New(Permanent) == New(Permanent) {
		t.Fatal("two secrets are equal")
	}
	if !strings.HasPrefix(New(Permanent), "caddy_pat_") || !strings.HasPrefix(New(Temporary), "caddy_tmp_") {
		t.Fatal("secrets do not carry their kind's prefix")
	}
}

// Secrets already handed out must keep parsing: these were issued by
// NewSecret, and their checksums were checked independently (zlib's
// CRC-32 of the first 42 characters, as 6 base62 digits, most significant
// first).
func TestParseSecretAcceptsIssuedSecrets(t *testing.T) {
	for secret, kind := range map[string]Kind{
		"caddy_pat_4FKg7yDCp0s3pS9C8MG6IaAtw1RbwU8M4KPD9t": Permanent,
		"caddy_tmp_B6Jz0Vz15aRBbgqEHmFLjt5I9TBqxyHw4AC7y8": Temporary,
	} {
		if got, ok := Parse(secret); !ok || got != kind {
			t.Errorf("Parse(%q) = %v, %v; want %v, true", secret, got, ok, kind)
		}
	}
}

func TestParseSecretRejectsEveryOneCharacterChange(t *testing.T) {
	s := New(Permanent)
	for i := range len(s) {
		for _, c := range []byte{'0', 'a', 'Z', '_', '-', 0, 0xff} {
			if s[i] == c {
				continue
			}
			mutated := s[:i] + string([]byte{c}) + s[i+1:]
			if _, ok := Parse(mutated); ok {
				t.Fatalf("ParseSecret accepted %q (position %d changed to %q)", mutated, i, c)
			}
		}
	}
	for _, bad := range []string{"", s[:len(s)-1], s + "0", "Bearer " + s, strings.ToUpper(s)} {
		if _, ok := Parse(bad); ok {
			t.Fatalf("ParseSecret accepted %q", bad)
		}
	}
}

func TestSecretCharactersAreUniform(t *testing.T) {
	counts := map[byte]int{}
	const n = 2000
	for range n {
		s := New(Permanent)
		for i := prefixLen; i < prefixLen+randomLen; i++ {
			counts[s[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("saw %d distinct characters, want all 62", len(counts))
	}
	expected := float64(n*randomLen) / 62
	for c, k := range counts {
		if float64(k) < expected*0.8 || float64(k) > expected*1.2 {
			t.Errorf("character %q appears %d times, expected about %.0f", c, k, expected)
		}
	}
}

func TestParseAndHashDoNotAllocate(t *testing.T) {
	s := New(Permanent)
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := Parse(s); !ok {
			t.Fatal("valid secret rejected")
		}
		_ = HashOf(s)
	})
	if allocs != 0 {
		t.Fatalf("ParseSecret+HashSecret allocate %.0f times per call, want 0", allocs)
	}
}

func FuzzParseSecret(f *testing.F) {
	f.Add(New(Permanent))
	f.Add(New(Temporary))
	f.Add("caddy_pat_")
	f.Add("")
	f.Add(strings.Repeat("\xff", Len))
	f.Fuzz(func(t *testing.T, s string) {
		kind, ok := Parse(s)
		if !ok {
			return
		}
		// Whatever is accepted has the exact shape and a matching checksum.
		if len(s) != Len || !strings.HasPrefix(s, prefixFor(kind)) {
			t.Fatalf("accepted malformed %q", s)
		}
		var buf [Len]byte
		copy(buf[:], s)
		putChecksum(buf[:])
		if string(buf[:]) != s {
			t.Fatalf("accepted %q with a wrong checksum", s)
		}
	})
}

func BenchmarkParseAndHashSecret(b *testing.B) {
	s := New(Permanent)
	b.ReportAllocs()
	for b.Loop() {
		Parse(s)
		HashOf(s)
	}
}

func TestCRCMatchesLibrary(t *testing.T) {
	// Every length around the eight-byte steps, with random bytes.
	data := make([]byte, 100)
	_, _ = rand.Read(data)
	for n := range len(data) {
		p := data[:n]
		want := crc32.ChecksumIEEE(p)
		if got := crc32IEEE(p); got != want {
			t.Fatalf("crc32IEEE(%d bytes) = %x, want %x", n, got, want)
		}
		if got := crc32IEEE(string(p)); got != want {
			t.Fatalf("crc32IEEE(%d-byte string) = %x, want %x", n, got, want)
		}
	}
}
