package storage

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
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
	// SecretLen is the exact length of every secret.
	SecretLen = prefixLen + randomLen + checksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// isBase62 is a lookup table, so checking a secret's characters is a loop of loads.
var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = true
	}
	return t
}()

// SecretHash is the SHA-256 of a secret: what is stored and looked up.
type SecretHash [sha256.Size]byte

// NewSecret returns a fresh secret of the given kind.
func NewSecret(kind TokenKind) string {
	var buf [SecretLen]byte
	copy(buf[:], prefixFor(kind))
	fillBase62(buf[prefixLen : prefixLen+randomLen])
	putChecksum(buf[:])
	return string(buf[:])
}

// ParseSecret checks a secret's shape and checksum without touching storage
// and without allocating. It reports the kind the prefix names.
func ParseSecret(s string) (TokenKind, bool) {
	if len(s) != SecretLen {
		return "", false
	}
	var kind TokenKind
	switch s[:prefixLen] {
	case PermanentPrefix:
		kind = Permanent
	case TemporaryPrefix:
		kind = Temporary
	default:
		return "", false
	}
	for i := prefixLen; i < SecretLen; i++ {
		if !isBase62[s[i]] {
			return "", false
		}
	}
	var buf [SecretLen]byte // a stack copy: the CRC needs bytes, and this does not allocate
	copy(buf[:], s)
	putChecksum(buf[:])
	if string(buf[prefixLen+randomLen:]) != s[prefixLen+randomLen:] {
		return "", false
	}
	return kind, true
}

// HashSecret returns the SHA-256 of a secret without allocating.
func HashSecret(s string) SecretHash {
	if len(s) <= SecretLen {
		var buf [SecretLen]byte // on the stack: sha256.Sum256 does not keep it
		n := copy(buf[:], s)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(s))
}

// NewTokenID returns a fresh non-secret token handle for URLs, logs and
// metric labels.
func NewTokenID() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "tok_" + hex.EncodeToString(b[:])
}

func prefixFor(kind TokenKind) string {
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

var crcTable = crc32.MakeTable(crc32.IEEE)

// crc32IEEE equals crc32.ChecksumIEEE, written out because the library's
// assembly path makes its argument escape, which would cost the hot path an
// allocation per request.
func crc32IEEE(p []byte) uint32 {
	crc := ^uint32(0)
	for _, b := range p {
		crc = crcTable[byte(crc)^b] ^ (crc >> 8)
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
