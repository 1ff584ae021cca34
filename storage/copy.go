package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// CopyCounts says what Copy copied.
type CopyCounts struct {
	Keys, Users, Tokens int
}

// copyChunk bounds the keys written per destination transaction, well
// inside Badger's transaction size limit.
const copyChunk = 5000

// ErrNotEmpty is returned by Copy when the destination already holds data.
var ErrNotEmpty = errors.New("storage: the destination database is not empty")

// Copy copies everything src holds into dst, which must be empty: users
// with their password hashes, tokens with their hashes (so no token has
// to be issued again), settings, alert state and notification records,
// the last alert pass's results and the audit log. Both backends store the
// same keys, so it is a copy of every key, from one consistent snapshot of
// src, in transactions of copyChunk keys. Every key keeps its TTL (the
// login throttle's and the login sessions'), and expired temporary tokens
// are left behind. now is the time by which "expired" is judged.
//
// Nothing reads dst while it runs (open the Store on it afterwards). If
// it fails half-way, dst holds part of the data: empty it before trying
// again.
func Copy(ctx context.Context, dst, src kv.Backend, now time.Time) (CopyCounts, error) {
	var counts CopyCounts
	if err := requireEmpty(ctx, dst); err != nil {
		return counts, err
	}
	err := src.View(ctx, func(r kv.Reader) error {
		sessions, err := temporaryTokens(r, now)
		if err != nil {
			return err
		}
		var chunk []copiedKey
		flush := func() error {
			if len(chunk) == 0 {
				return nil
			}
			err := dst.Update(ctx, func(w kv.Writer) error {
				for _, k := range chunk {
					if err := w.Set(k.key, k.val, k.ttl); err != nil {
						return err
					}
				}
				return nil
			})
			chunk = chunk[:0]
			return err
		}
		err = scanExpiry(r, func(key, val []byte, collectAt time.Time) error {
			k := string(key)
			expires, session := sessionOf(k, sessions)
			if session && !expires.After(now) {
				return nil // an expired login session: gone already
			}
			c := copiedKey{key: k, val: append([]byte(nil), val...)}
			switch {
			case !collectAt.IsZero():
				c.ttl = max(time.Until(collectAt), time.Second) // backends' TTLs run on the real clock
			case session:
				c.ttl = expires.Sub(now) + time.Minute
			}
			chunk = append(chunk, c)
			counts.Keys++
			switch {
			case strings.HasPrefix(k, prefixUser):
				counts.Users++
			case strings.HasPrefix(k, prefixToken):
				counts.Tokens++
			}
			if len(chunk) == copyChunk {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return flush()
	})
	return counts, err
}

// scanExpiry scans every key of r with when the backend may collect it
// (zero: never, or r cannot tell).
func scanExpiry(r kv.Reader, fn func(key, val []byte, collectAt time.Time) error) error {
	if es, ok := r.(kv.ExpiryScanner); ok {
		return es.ScanExpiry("", kv.ScanOptions{}, fn)
	}
	return r.Scan("", kv.ScanOptions{}, func(key, val []byte) error { return fn(key, val, time.Time{}) })
}

type copiedKey struct {
	key string
	val []byte
	ttl time.Duration
}

// requireEmpty refuses a destination that holds any key.
func requireEmpty(ctx context.Context, b kv.Backend) error {
	empty := true
	err := b.View(ctx, func(r kv.Reader) error {
		return r.Scan("", kv.ScanOptions{KeysOnly: true}, func(key, _ []byte) error {
			empty = false
			return kv.ErrStopScan
		})
	})
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("%w: copy only into a new, empty database", ErrNotEmpty)
	}
	return nil
}

// temporaryTokens maps the id of every temporary token to its expiry, so
// that the keys of a login session (its record, its index entries, its
// last use) keep their TTL in the copy.
func temporaryTokens(r kv.Reader, now time.Time) (map[string]time.Time, error) {
	sessions := map[string]time.Time{}
	err := r.Scan(prefixToken, kv.ScanOptions{}, func(key, val []byte) error {
		h, err := parseHeader(val)
		if err != nil {
			return fmt.Errorf("token %s: %w", short(string(key[len(prefixToken):])), err)
		}
		if h.kind == Temporary {
			sessions[string(key[len(prefixToken):])] = nanosTime(h.expires)
		}
		return nil
	})
	return sessions, err
}

// sessionOf reports whether key belongs to a login session and when that
// session expires.
func sessionOf(key string, sessions map[string]time.Time) (time.Time, bool) {
	var id string
	switch {
	case strings.HasPrefix(key, prefixToken):
		id = key[len(prefixToken):]
	case strings.HasPrefix(key, prefixLastUsed):
		id = key[len(prefixLastUsed):]
	case strings.HasPrefix(key, prefixUserToken):
		id = key[strings.LastIndexByte(key, '/')+1:]
	case strings.HasPrefix(key, prefixCreatedTemp):
		id, _ = createdPosID(key[len(prefixCreatedTemp):])
	case strings.HasPrefix(key, prefixExpiryTemp):
		id, _ = expiryPosID(key[len(prefixExpiryTemp):])
	default:
		return time.Time{}, false
	}
	exp, ok := sessions[id]
	return exp, ok
}
