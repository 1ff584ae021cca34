package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Paged lists. Every list has an order by a position that never changes
// for an item: a username; a token's user, creation time and id; a
// token's expiry and id; an audit entry's key. A page starts strictly
// after the position of the last item of the page before (keyset
// pagination, not an offset), so a walk through every page lists each item
// that exists throughout the walk exactly once, however many others are
// created or deleted meanwhile, and a page costs the same at the end of a
// million items as at the start: a range scan of about limit index keys
// and a few batched reads (GetMany), never a scan of everything.

// Limits of a page: the default and the largest number of items.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// pageLimit is limit within 1..MaxPageLimit; below 1 means the default.
func pageLimit(limit int) int {
	if limit < 1 {
		return DefaultPageLimit
	}
	return min(limit, MaxPageLimit)
}

// listOrder names a list's order. A cursor carries it, so that a list
// refuses the cursor of another: its position would mean nothing there.
type listOrder byte

const (
	orderUsers      listOrder = 'u' // by username
	orderTokens     listOrder = 't' // by user, creation time and id (cp/ and ct/)
	orderUserTokens listOrder = 'o' // one user's tokens, the same positions
	orderExpiry     listOrder = 'e' // by expiry and id (e/ and et/)
	orderAudit      listOrder = 'a' // newest first (a/, scanned in reverse)
)

// A cursor says where a list's next page starts. Clients see an opaque
// string: base64url without padding of a version byte, the list's order
// and the position of the last item of the page before. The version lets
// a later release change the format and still recognize, and refuse
// clearly, the cursors of this one.
const cursorVersion = 1

// maxCursorLen bounds the cursors decoded: the longest position, a user's
// token, is 64+1+8+64 bytes, about 184 characters once encoded.
const maxCursorLen = 256

func encodeCursor(o listOrder, pos string) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{cursorVersion, byte(o)}, pos...))
}

// decodeCursor returns the position in cursor, a cursor of a list in
// order o whose positions valid accepts; "" (no cursor) is the first page.
// Anything else is ErrInvalid, which the admin API answers with 400.
func decodeCursor(cursor string, o listOrder, valid func(pos string) bool) (string, error) {
	if cursor == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if len(cursor) > maxCursorLen || err != nil || len(b) < 3 || b[0] != cursorVersion {
		return "", fmt.Errorf("%w: cursor %q is not a cursor of this API; pass the cursor of the Link header's next page unchanged, or none for the first page", ErrInvalid, short(cursor))
	}
	if listOrder(b[1]) != o || !valid(string(b[2:])) {
		return "", fmt.Errorf("%w: cursor %q belongs to another list (another path, user or filter); pass the cursor of this list's Link header, or none for the first page", ErrInvalid, short(cursor))
	}
	return string(b[2:]), nil
}

// createdPosID returns the token id in a cp/ or ct/ position,
// <user>\x00<created ns BE><id>, checking that it is well formed.
func createdPosID(pos string) (string, bool) {
	i := strings.IndexByte(pos, 0)
	if i < 0 || len(pos) < i+1+8 || ValidateUsername(pos[:i]) != nil {
		return "", false
	}
	id := pos[i+1+8:]
	return id, plausibleTokenID(id)
}

// expiryPosID returns the token id in an e/ or et/ position,
// <expiry ns BE>/<id>, checking that it is well formed.
func expiryPosID(pos string) (string, bool) {
	if len(pos) < 8+1 || pos[8] != '/' {
		return "", false
	}
	id := pos[9:]
	return id, plausibleTokenID(id)
}

// ListUsersPage returns up to limit users (pageLimit) after cursor, by
// username, and the cursor of the next page: "" on the last page.
func (s *Store) ListUsersPage(ctx context.Context, cursor string, limit int) ([]User, string, error) {
	after, err := decodeCursor(cursor, orderUsers, func(p string) bool { return ValidateUsername(p) == nil })
	if err != nil {
		return nil, "", err
	}
	limit = pageLimit(limit)
	var users []User
	err = s.view(ctx, func(r kv.Reader) error {
		users = users[:0]
		o := kv.ScanOptions{}
		if after != "" {
			o.From = userKey(after) + "\x00"
		}
		return r.Scan(prefixUser, o, func(_, val []byte) error {
			u, err := decodeUser(val)
			if err != nil {
				return err
			}
			if users = append(users, u); len(users) > limit {
				return kv.ErrStopScan
			}
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	if len(users) <= limit {
		return orEmpty(users), "", nil
	}
	return users[:limit], encodeCursor(orderUsers, users[limit-1].Username), nil
}

// ListTokensPage returns up to limit tokens (pageLimit) that pass f, after
// cursor, and the cursor of the next page: "" on the last page. Without
// f.ExpiringBefore the order is by user, creation time and id; with it,
// by expiry and id (expired tokens first, then the soonest to expire),
// which is the order that question wants and the one its index (e/, et/)
// keeps, so a page reads only tokens that pass the filter. Expired
// temporary tokens are gone; expired and revoked permanent ones are
// listed.
func (s *Store) ListTokensPage(ctx context.Context, f TokenFilter, cursor string, limit int) ([]Token, string, error) {
	ranges, order, err := tokenRanges(f)
	if err != nil {
		return nil, "", err
	}
	valid := func(p string) bool { _, ok := createdPosID(p); return ok }
	if order == orderExpiry {
		valid = func(p string) bool { _, ok := expiryPosID(p); return ok }
	}
	after, err := decodeCursor(cursor, order, valid)
	if err != nil {
		return nil, "", err
	}
	return s.tokensPage(ctx, order, ranges, after, pageLimit(limit), nil)
}

// ListUserTokensPage returns up to limit of a user's tokens (pageLimit)
// after cursor, by creation time and id, and the cursor of the next page:
// "" on the last page. Expired temporary tokens are gone; expired and
// revoked permanent ones are listed.
func (s *Store) ListUserTokensPage(ctx context.Context, name, cursor string, limit int) ([]Token, string, error) {
	within := name + "\x00"
	after, err := decodeCursor(cursor, orderUserTokens, func(p string) bool {
		_, ok := createdPosID(p)
		return ok && strings.HasPrefix(p, within)
	})
	if err != nil {
		return nil, "", err
	}
	ranges := []indexRange{
		{prefix: prefixCreatedPerm, within: within, id: createdPosID},
		{prefix: prefixCreatedTemp, within: within, id: createdPosID},
	}
	userExists := func(r kv.Reader) error {
		_, err := getUser(r, name)
		return err
	}
	return s.tokensPage(ctx, orderUserTokens, ranges, after, pageLimit(limit), userExists)
}

// tokenRanges picks the indexes that hold exactly the tokens f keeps, in
// the order the list has with f.
func tokenRanges(f TokenFilter) ([]indexRange, listOrder, error) {
	perm, temp := true, true
	switch f.Kind {
	case "":
	case Permanent:
		temp = false
	case Temporary:
		perm = false
	default:
		return nil, 0, fmt.Errorf("%w: token kind must be %q or %q", ErrInvalid, Permanent, Temporary)
	}
	var ranges []indexRange
	if f.ExpiringBefore.IsZero() {
		if perm {
			ranges = append(ranges, indexRange{prefix: prefixCreatedPerm, id: createdPosID})
		}
		if temp {
			ranges = append(ranges, indexRange{prefix: prefixCreatedTemp, id: createdPosID})
		}
		return ranges, orderTokens, nil
	}
	// Every token expires before latestExpiry, and later times do not fit
	// in the key's nanoseconds: no bound is needed then. No token expires
	// before 1970, whose negative nanoseconds would not sort.
	before := ""
	switch {
	case f.ExpiringBefore.Before(time.Unix(0, 0)):
		before = be64(0)
	case !f.ExpiringBefore.After(latestExpiry):
		before = be64(f.ExpiringBefore.UnixNano())
	}
	if perm {
		// e/ keys hold a copy of the record: no read of t/<id> needed.
		ranges = append(ranges, indexRange{prefix: prefixExpiry, before: before, values: true, id: expiryPosID})
	}
	if temp {
		ranges = append(ranges, indexRange{prefix: prefixExpiryTemp, before: before, id: expiryPosID})
	}
	return ranges, orderExpiry, nil
}

// tokensPage reads one page of a token list in one read transaction, after
// check (if not nil) has passed in it.
func (s *Store) tokensPage(ctx context.Context, order listOrder, ranges []indexRange, after string, limit int, check func(kv.Reader) error) ([]Token, string, error) {
	var tokens []Token
	var last string
	err := s.view(ctx, func(r kv.Reader) error {
		if check != nil {
			if err := check(r); err != nil {
				return err
			}
		}
		now := s.clock.Now()
		recs, lastPos, err := livePage(r, newLiveTokens(r, now), ranges, after, limit)
		if err != nil {
			return err
		}
		last = lastPos
		tokens, err = s.tokenViews(r, recs, now)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if last != "" {
		next = encodeCursor(order, last)
	}
	return orEmpty(tokens), next, nil
}

// indexRange is one index a token list reads: the keys under
// prefix+within, each standing for the token with the id in its position
// (the key after prefix). Positions of the ranges of one list compare
// with each other, so the ranges merge into one order.
type indexRange struct {
	prefix string
	// within starts every position of the list ("alice\x00": one user's).
	within string
	// before, if not "", ends the list: positions from it on are out.
	before string
	// values: the keys hold the token's record (e/), read instead of t/<id>.
	values bool
	id     func(pos string) (string, bool)
}

// indexEntry is one key of an indexRange.
type indexEntry struct {
	pos string
	val []byte // the record, for a range with values; nil to read t/<id>
	rng int    // the range it came from
}

// read returns up to n entries of the range after position after.
func (ir indexRange) read(r kv.Reader, after string, n int) ([]indexEntry, error) {
	o := kv.ScanOptions{KeysOnly: !ir.values}
	if after != "" {
		o.From = ir.prefix + after + "\x00" // the first key after it
	}
	if ir.before != "" {
		o.To = ir.prefix + ir.before
	}
	var out []indexEntry
	err := r.Scan(ir.prefix+ir.within, o, func(key, val []byte) error {
		e := indexEntry{pos: string(key[len(ir.prefix):])}
		if len(val) > 0 {
			e.val = bytes.Clone(val)
		}
		out = append(out, e)
		if len(out) == n {
			return kv.ErrStopScan
		}
		return nil
	})
	return out, err
}

// readMerged returns the first n entries after position after of all the
// ranges together, in position order, and whether more may follow.
func readMerged(r kv.Reader, ranges []indexRange, after string, n int) ([]indexEntry, bool, error) {
	var all []indexEntry
	more := false
	for i, ir := range ranges {
		got, err := ir.read(r, after, n)
		if err != nil {
			return nil, false, err
		}
		for j := range got {
			got[j].rng = i
		}
		more = more || len(got) == n // this range may hold more
		all = append(all, got...)
	}
	slices.SortFunc(all, func(a, b indexEntry) int { return strings.Compare(a.pos, b.pos) })
	if len(all) > n {
		all, more = all[:n], true
	}
	return all, more, nil
}

// livePage reads up to limit live tokens of the ranges after position
// after, and the position of the last of them if more follow ("" if this
// is the last page). It reads limit+1 entries at a time, so a page with
// nothing to skip takes one round; index keys whose token is gone (a
// session past its expiry that the backend has not collected yet, a
// deleted user's token awaiting the purge) are skipped, and the next
// entries read.
func livePage(r kv.Reader, live *liveTokens, ranges []indexRange, after string, limit int) ([]tokenRecord, string, error) {
	var recs []tokenRecord
	var positions []string
	for {
		entries, more, err := readMerged(r, ranges, after, limit+1)
		if err != nil {
			return nil, "", err
		}
		got, pos, err := resolveEntries(r, live, ranges, entries)
		if err != nil {
			return nil, "", err
		}
		recs, positions = append(recs, got...), append(positions, pos...)
		if len(recs) > limit || !more {
			break
		}
		after = entries[len(entries)-1].pos
	}
	if len(recs) <= limit {
		return recs, "", nil
	}
	return recs[:limit], positions[limit-1], nil
}

// resolveEntries returns the live tokens that entries stand for, in their
// order, with their positions: the records from the entries' values or
// from one GetMany of t/<id>, and their owners from another.
func resolveEntries(r kv.Reader, live *liveTokens, ranges []indexRange, entries []indexEntry) ([]tokenRecord, []string, error) {
	recs := make([]tokenRecord, len(entries))
	found := make([]bool, len(entries))
	var keys []string
	var at []int // the entry of each key
	for i, e := range entries {
		id, ok := ranges[e.rng].id(e.pos)
		if !ok {
			return nil, nil, fmt.Errorf("storage: corrupt %s key", keyKind(ranges[e.rng].prefix))
		}
		if e.val == nil {
			keys, at = append(keys, tokenKey(id)), append(at, i)
			continue
		}
		rec, err := unmarshalToken(e.val)
		if err != nil || rec.ID != id {
			return nil, nil, fmt.Errorf("storage: corrupt %s entry for token %q", keyKind(ranges[e.rng].prefix), short(id))
		}
		recs[i], found[i] = rec, true
	}
	err := r.GetMany(keys, func(j int, val []byte) error {
		rec, err := unmarshalToken(val)
		recs[at[j]], found[at[j]] = rec, err == nil
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: read tokens: %w", err)
	}
	if err := live.knowUsers(recs, found); err != nil {
		return nil, nil, err
	}
	var out []tokenRecord
	var positions []string
	for i := range entries {
		if !found[i] {
			continue // deleted since the index was read: cannot happen in one snapshot, but harmless
		}
		ok, err := live.live(&recs[i])
		if err != nil {
			return nil, nil, err
		}
		if ok {
			out, positions = append(out, recs[i]), append(positions, entries[i].pos)
		}
	}
	return out, positions, nil
}

// ListAuditPage returns up to limit audit entries (pageLimit) after
// cursor, newest first, and the cursor of the next page: "" on the last.
// Entries written while a client pages are older than its cursor only if
// their time is (a clock that went back); those it meets later, the
// others it does not see, as with any newest-first log.
func (s *Store) ListAuditPage(ctx context.Context, cursor string, limit int) ([]AuditEntry, string, error) {
	after, err := decodeCursor(cursor, orderAudit, func(p string) bool { return len(p) == 16 })
	if err != nil {
		return nil, "", err
	}
	limit = pageLimit(limit)
	var out []AuditEntry
	var keys []string
	err = s.view(ctx, func(r kv.Reader) error {
		out, keys = out[:0], keys[:0]
		o := kv.ScanOptions{Reverse: true}
		if after != "" {
			o.From = prefixAudit + after // a reverse scan includes From: skipped below
		}
		return r.Scan(prefixAudit, o, func(key, v []byte) error {
			if o.From != "" && string(key) == o.From {
				return nil
			}
			e, err := decodeAudit(v)
			if err != nil {
				return err
			}
			if out, keys = append(out, e), append(keys, string(key)); len(out) > limit {
				return kv.ErrStopScan
			}
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	if len(out) <= limit {
		return orEmpty(out), "", nil
	}
	return out[:limit], encodeCursor(orderAudit, keys[limit-1][len(prefixAudit):]), nil
}
