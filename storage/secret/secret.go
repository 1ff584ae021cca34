// Package secret is the format of API token secrets: a prefix naming the
// token's kind, 190 random bits and a checksum, so that scanners can find
// leaked tokens and a gateway rejects garbage without any lookup; and the
// SHA-256 under which a secret is stored and looked up. It has no
// dependencies of its own: storage mints secrets with it, the verifier
// checks and hashes them, and tools check them offline.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"hash/crc32"
)

// Kind tells how a token was minted and how long it may live; the
// secret's prefix names it.
type Kind string

const (
	// Temporary tokens are minted by logging in and live for the session.
	Temporary Kind = "temporary"
	// Permanent tokens are created by an administrator for CI/CD and automation.
	Permanent Kind = "permanent"
)

// A secret looks like caddy_pat_<32 random base62 chars><6 base62 checksum chars>:
//
//   - the kind-specific prefix makes leaked tokens greppable by secret
//     scanners (caddy_pat_ permanent, caddy_tmp_ temporary);
//   - 32 base62 characters from crypto/rand carry 190 bits;
//   - the checksum (CRC-32 of prefix and random part) lets the gateway
//     reject typos and garbage without touching storage.
const (
	PermanentPrefix = "caddy_pat_"
	TemporaryPrefix = "caddy_tmp_"

	prefixLen   = len(PermanentPrefix)
	randomLen   = 32
	checksumLen = 6
	// Len is the exact length of every secret.
	Len = prefixLen + randomLen + checksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// base62Value maps a character to its base62 digit, or notBase62, so
// checking and decoding a secret are loops of loads.
var base62Value = func() (t [256]byte) {
	for i := range t {
		t[i] = notBase62
	}
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = byte(i)
	}
	return t
}()

const notBase62 = 0xff

// Hash is the SHA-256 of a secret: what is stored and looked up.
type Hash [sha256.Size]byte

// New returns a fresh secret of the given kind.
func New(kind Kind) string {
	var buf [Len]byte
	copy(buf[:], prefixFor(kind))
	fillBase62(buf[prefixLen : prefixLen+randomLen])
	putChecksum(buf[:])
	return string(buf[:])
}

// Parse checks a secret's shape and checksum without allocating. It reports the kind the prefix names.
//
// It is on every request's path, so it reads the string in place: the
// checksum characters are decoded and compared with the CRC, rather than
// the CRC encoded into a copy of the secret.
func Parse(s string) (Kind, bool) {
	if len(s) != Len {
		return "", false
	}
	var kind Kind
	switch s[:prefixLen] {
	case PermanentPrefix:
		kind = Permanent
	case TemporaryPrefix:
		kind = Temporary
	default:
		return "", false
	}
	body := s[:prefixLen+randomLen]
	for i := prefixLen; i < len(body); i++ {
		if base62Value[s[i]] == notBase62 {
			return "", false
		}
	}
	var checksum uint64 // 62^6 > 2^32: a value past 32 bits matches no CRC
	for i := len(body); i < Len; i++ {
		d := base62Value[s[i]]
		if d == notBase62 {
			return "", false
		}
		checksum = checksum*62 + uint64(d)
	}
	if checksum != uint64(crc32IEEE(body)) {
		return "", false
	}
	return kind, true
}

// HashOf returns the SHA-256 of a secret without allocating.
func HashOf(s string) Hash {
	if len(s) <= Len {
		var buf [Len]byte // on the stack: sha256.Sum256 does not keep it
		n := copy(buf[:], s)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(s))
}

func prefixFor(kind Kind) string {
	if kind == Temporary {
		return TemporaryPrefix
	}
	return PermanentPrefix
}

// fillBase62 fills dst with uniformly random base62 characters, rejecting
// random bytes >= 248 (4*62) so no character is more likely than another.
func fillBase62(dst []byte) {
	var pool [64]byte
	filled := 0
	for filled < len(dst) {
		_, _ = rand.Read(pool[:])
		for _, b := range pool {
			if b >= 248 {
				continue
			}
			dst[filled] = base62[b%62]
			filled++
			if filled == len(dst) {
				return
			}
		}
	}
}

func putChecksum(secret []byte) {
	encodeChecksum(secret[prefixLen+randomLen:], crc32IEEE(secret[:prefixLen+randomLen]))
}

// crcTables are the slicing-by-8 tables for CRC-32 (IEEE): table k gives
// the CRC contribution of a byte followed by k zero bytes, so eight bytes
// are folded in per step instead of one.
var crcTables = func() (t [8][256]uint32) {
	for i := range 256 {
		crc := uint32(i)
		for range 8 {
			if crc&1 == 1 {
				crc = crc>>1 ^ crc32.IEEE
			} else {
				crc >>= 1
			}
		}
		t[0][i] = crc
	}
	for i := range 256 {
		crc := t[0][i]
		for k := 1; k < 8; k++ {
			crc = t[0][byte(crc)] ^ crc>>8
			t[k][i] = crc
		}
	}
	return t
}()

// crc32IEEE equals crc32.ChecksumIEEE. It is written out because the
// library's assembly path makes its argument escape, which would cost the
// hot path an allocation per request, and it takes a string so the hot
// path need not copy the secret into bytes.
func crc32IEEE[T string | []byte](p T) uint32 {
	crc := ^uint32(0)
	for len(p) >= 8 {
		crc ^= uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24
		crc = crcTables[0][p[7]] ^ crcTables[1][p[6]] ^ crcTables[2][p[5]] ^ crcTables[3][p[4]] ^
			crcTables[4][crc>>24] ^ crcTables[5][byte(crc>>16)] ^ crcTables[6][byte(crc>>8)] ^ crcTables[7][byte(crc)]
		p = p[8:]
	}
	for i := 0; i < len(p); i++ {
		crc = crcTables[0][byte(crc)^p[i]] ^ crc>>8
	}
	return ^crc
}

// encodeChecksum writes sum as exactly checksumLen base62 digits (62^6 > 2^32).
func encodeChecksum(dst []byte, sum uint32) {
	v := uint64(sum)
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62[v%62]
		v /= 62
	}
}
