package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

const (
	maxTokenNameLen = 64
	// loginTokenName names temporary tokens created without a name.
	loginTokenName = "login"
)

// latestExpiry keeps expiry times inside what int64 nanoseconds can hold.
var latestExpiry = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// validateTokenName checks a permanent token's name: 1-64 printable
// characters, no surrounding spaces.
func validateTokenName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: token name is required", ErrInvalid)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: token name must be valid UTF-8", ErrInvalid)
	case utf8.RuneCountInString(name) > maxTokenNameLen:
		return fmt.Errorf("%w: token name must be at most %d characters long", ErrInvalid, maxTokenNameLen)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: token name %q must not start or end with spaces", ErrInvalid, name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: token name %q contains a control or non-printable character", ErrInvalid, name)
		}
	}
	return nil
}

// CreateToken mints a token for an existing, enabled user and returns its
// secret, which is shown once and never stored (only its SHA-256 is).
func (s *Store) CreateToken(ctx context.Context, t NewToken) (string, Token, error) {
	t, err := checkNewToken(ctx, s.catalogue(), t)
	if err != nil {
		return "", Token{}, err
	}
	var sec string
	var meta Token
	c := s.catalogue()
	err = s.update(ctx, func(w *writeTxn) error {
		owner, err := checkTokenOwner(w, t.User)
		if err != nil {
			return err
		}
		t := t
		if t.Scopes, err = withinCeiling(c, &owner.User, t.Scopes); err != nil {
			return err
		}
		if t.Kind == Temporary && t.MaxSessions > 0 {
			if err := endOldestSessions(ctx, w, t.User, t.MaxSessions-1); err != nil {
				return err
			}
		}
		sec, meta, err = s.mint(ctx, w, t, false)
		return err
	})
	if err != nil {
		return "", Token{}, err
	}
	return sec, meta, nil
}

// endOldestSessions ends the user's oldest live sessions (temporary
// tokens) until at most keep are left, each audited. The ct/ index holds
// them in creation order; expired ones not yet collected are skipped.
func endOldestSessions(ctx context.Context, w *writeTxn, user string, keep int) error {
	var ids []string
	err := w.Scan(prefixCreatedTemp+user+"\x00", kv.ScanOptions{KeysOnly: true}, func(k, _ []byte) error {
		if id, ok := createdPosID(string(k[len(prefixCreatedTemp):])); ok {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil || len(ids) <= keep {
		return err
	}
	live := newLiveTokens(w, w.now)
	var sessions []tokenRecord
	for _, id := range ids {
		rec, found, err := live.get(id)
		if err != nil {
			return err
		}
		if found {
			sessions = append(sessions, rec)
		}
	}
	for _, rec := range sessions[:max(len(sessions)-keep, 0)] {
		if err := deleteToken(w, rec); err != nil {
			return err
		}
		w.record(ctx, ActionSessionEnded, rec.ID, fmt.Sprintf("user=%s reason=max_sessions_per_user limit=%d", rec.User, keep+1))
	}
	return nil
}

// GetUserToken returns one of user's tokens, as the lists show it:
// ErrNotFound if the user has no token with this id (deleted, a session
// that has ended, or another user's).
func (s *Store) GetUserToken(ctx context.Context, user, id string) (Token, error) {
	var t Token
	err := s.view(ctx, func(r kv.Reader) error {
		now := s.clock.Now()
		rec, found, err := newLiveTokens(r, now).get(id)
		if err != nil {
			return err
		}
		if !found || rec.User != user {
			return notUsersToken(user, id)
		}
		views, err := s.tokenViews(r, []tokenRecord{rec}, now)
		if err != nil {
			return err
		}
		t = views[0]
		return nil
	})
	return t, err
}

// checkNewToken validates a token request against the catalogue c and
// fills in its defaults: an unnamed temporary token is a login token, and
// the creator defaults to the context's actor. The scopes' ceiling is
// checked in the transaction (withinCeiling).
func checkNewToken(ctx context.Context, c *catalogue, t NewToken) (NewToken, error) {
	if t.Kind != Permanent && t.Kind != Temporary {
		return t, fmt.Errorf("%w: token kind must be %q or %q", ErrInvalid, Permanent, Temporary)
	}
	if t.Kind == Temporary && t.Name == "" {
		t.Name = loginTokenName
	}
	if err := validateTokenName(t.Name); err != nil {
		return t, err
	}
	if t.Scopes != nil {
		var err error
		if t.Scopes, err = c.checkScopes("scopes", t.Scopes); err != nil {
			return t, err
		}
	}
	var err error
	if t.AllowedCIDRs, err = checkNetworks(t.AllowedCIDRs); err != nil {
		return t, err
	}
	if t.CreatedBy == "" {
		t.CreatedBy = CallerFrom(ctx).Name
	}
	return t, nil
}

// checkTokenOwner refuses tokens for missing or disabled users, and
// returns the user.
func checkTokenOwner(r kv.Reader, name string) (userRecord, error) {
	u, err := getUser(r, name)
	if err != nil {
		return u, err
	}
	if u.Disabled {
		return u, fmt.Errorf("%w: user %q is disabled; enable the user before creating tokens", ErrInvalid, name)
	}
	return u, nil
}

// withinCeiling checks a new token's scopes (checked against the
// catalogue already) against its user's ceiling; nil asks for the
// ceiling itself, as far as the catalogue declares it.
func withinCeiling(c *catalogue, u *User, scopes []string) ([]string, error) {
	ceiling := c.ceilingOf(u)
	if scopes == nil {
		return c.declaredOf(ceiling), nil
	}
	if n := beyond(scopes, ceiling); n != "" {
		return nil, fmt.Errorf("%w: scopes: user %q does not hold scope %q, so their tokens cannot carry it", ErrInvalid, u.Username, n)
	}
	return scopes, nil
}

// mint is the one place a token is made: a fresh secret, its record and
// index keys, and the audit entry (login for a session, token_create for a
// permanent token). t is checked (checkNewToken) and its owner too, and
// nameFree says whether the caller has checked already that the name is
// free.
func (s *Store) mint(ctx context.Context, w *writeTxn, t NewToken, nameFree bool) (string, Token, error) {
	sec := secret.New(t.Kind)
	rec := tokenRecord{Hash: secret.HashOf(sec), Token: Token{
		ID: NewTokenID(), User: t.User, Name: t.Name, Kind: t.Kind,
		CreatedAt: w.now, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt.UTC(),
		Scopes: orEmpty(t.Scopes), AllowedCIDRs: orEmpty(t.AllowedCIDRs),
	}}
	if err := s.insertToken(w, &rec, nameFree); err != nil {
		return "", Token{}, err
	}
	grants := fmt.Sprintf("scopes=%s allowed_cidrs=%s", describeScopes(rec.Scopes), describeNetworks(rec.AllowedCIDRs))
	expires := rec.ExpiresAt.Format(time.RFC3339)
	if t.Kind == Temporary {
		w.record(ctx, ActionLogin, rec.ID, fmt.Sprintf("user=%s expires_at=%s %s", rec.User, expires, grants))
	} else {
		w.record(ctx, ActionTokenCreate, rec.ID, fmt.Sprintf("user=%s name=%q expires_at=%s %s", rec.User, rec.Name, expires, grants))
	}
	meta := rec.Token
	meta.Status = rec.StatusAt(w.now)
	return sec, meta, nil
}

// insertToken writes a new token with its index keys. A permanent token's
// name must be free for its user; it is checked unless nameFree.
func (s *Store) insertToken(w *writeTxn, rec *tokenRecord, nameFree bool) error {
	if !rec.ExpiresAt.After(w.now) {
		return fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.ExpiresAt.After(latestExpiry) {
		return fmt.Errorf("%w: expires_at %s is too far in the future", ErrInvalid, rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.Kind == Permanent {
		if !nameFree {
			taken, err := exists(w, nameKey(rec.User, rec.Name))
			if err != nil {
				return err
			}
			if taken {
				return nameTaken(rec.User, rec.Name)
			}
		}
		if err := set(w, nameKey(rec.User, rec.Name), []byte(rec.ID)); err != nil {
			return err
		}
	}
	if err := s.putTokenRecord(w, rec); err != nil {
		return err
	}
	for _, k := range listKeys(rec) {
		if err := s.setForToken(w, rec, k, nil); err != nil {
			return err
		}
	}
	return s.setForToken(w, rec, userTokenKey(rec.User, rec.ID), nil)
}

// putTokenRecord writes a token record and publishes the change with the
// token's hash. Every write of t/<id> goes through here, so a permanent
// token's copy under its expiry key (which ForEachPermanentToken reads
// instead of t/<id>) never differs from it.
func (s *Store) putTokenRecord(w kv.Writer, rec *tokenRecord) error {
	val := rec.marshal()
	if rec.Kind == Permanent {
		if err := set(w, expiryKey(rec.ExpiresAt, rec.ID), val); err != nil {
			return err
		}
	}
	if err := s.setForToken(w, rec, tokenKey(rec.ID), val); err != nil {
		return err
	}
	w.Publish(tokenKey(rec.ID), rec.Hash[:])
	return nil
}

// setForToken writes a key that belongs to token rec; a temporary token's
// keys may be collected by the backend shortly after the token expires.
func (s *Store) setForToken(w kv.Writer, rec *tokenRecord, key string, val []byte) error {
	if rec.Kind == Temporary {
		return setTTL(w, key, val, s.ttlUntil(rec.ExpiresAt))
	}
	return set(w, key, val)
}

// liveTokens reads token records as callers may see them: an expired
// temporary token counts as gone, whether or not the backend has collected
// it yet, and so does a token whose user was deleted and is only waiting
// for the purge. It remembers which users exist, for lists.
type liveTokens struct {
	r     kv.Reader
	now   time.Time
	users map[string]bool
}

func newLiveTokens(r kv.Reader, now time.Time) *liveTokens {
	return &liveTokens{r: r, now: now, users: map[string]bool{}}
}

// get reads the live token with this id.
func (l *liveTokens) get(id string) (tokenRecord, bool, error) {
	rec, found, err := getToken(l.r, id)
	if err != nil || !found {
		return rec, false, err
	}
	live, err := l.live(&rec)
	return rec, live, err
}

// live reports whether a record read from storage is a live token.
func (l *liveTokens) live(rec *tokenRecord) (bool, error) {
	if rec.Kind == Temporary && !rec.ExpiresAt.After(l.now) {
		return false, nil
	}
	found, known := l.users[rec.User]
	if !known {
		var err error
		if found, err = exists(l.r, userKey(rec.User)); err != nil {
			return false, err
		}
		l.users[rec.User] = found
	}
	return found, nil
}

// knowUsers finds out in one read whether the owners of the records
// (those with found set) exist, so that live need not read them one by
// one: on PostgreSQL each read is a round trip.
func (l *liveTokens) knowUsers(recs []tokenRecord, found []bool) error {
	var names, keys []string
	for i := range recs {
		u := recs[i].User
		if _, known := l.users[u]; found[i] && !known {
			l.users[u] = false
			names, keys = append(names, u), append(keys, userKey(u))
		}
	}
	err := l.r.GetMany(keys, func(i int, _ []byte) error {
		l.users[names[i]] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: read users: %w", err)
	}
	return nil
}

func getToken(r kv.Reader, id string) (tokenRecord, bool, error) {
	if !plausibleTokenID(id) {
		return tokenRecord{}, false, nil
	}
	val, found, err := getValue(r, tokenKey(id))
	if err != nil || !found {
		return tokenRecord{}, found, err
	}
	rec, err := unmarshalToken(val)
	if err != nil {
		return tokenRecord{}, false, err
	}
	return rec, true, nil
}

// maxTokenIDLen bounds ids looked up; real ones (NewTokenID) are 24 bytes.
const maxTokenIDLen = 64

// plausibleTokenID rejects ids that cannot exist before they reach the
// backend, whose keys are limited in size.
func plausibleTokenID(id string) bool { return id != "" && len(id) <= maxTokenIDLen }

func nameTaken(user, name string) error {
	return fmt.Errorf("%w: user %q already has a token named %q", ErrConflict, user, name)
}

func tokenNotFound(id string) error {
	return fmt.Errorf("%w: token %q does not exist", ErrNotFound, short(id))
}

func notUsersToken(user, id string) error {
	return fmt.Errorf("%w: user %q has no token %q", ErrNotFound, short(user), short(id))
}

// deleteToken removes a token and everything keyed by its id, and
// publishes the deletion with the token's hash, by which every node's
// index finds it.
func deleteToken(w kv.Writer, rec tokenRecord) error {
	return deleteTokens(w, []tokenRecord{rec})
}

// deleteTokens deletes tokens as deleteToken does, reading the name keys
// of the permanent ones in one GetMany (a batch of a purge costs one read
// on PostgreSQL, not one per token).
func deleteTokens(w kv.Writer, recs []tokenRecord) error {
	var names []string
	var owners []int // index in recs of each name key
	for i, rec := range recs {
		if rec.Kind == Permanent {
			names, owners = append(names, nameKey(rec.User, rec.Name)), append(owners, i)
		}
	}
	ownsName := make([]bool, len(recs))
	err := w.GetMany(names, func(i int, owner []byte) error {
		ownsName[owners[i]] = string(owner) == recs[owners[i]].ID
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: read token names: %w", err)
	}
	for i, rec := range recs {
		keys := []string{tokenKey(rec.ID), userTokenKey(rec.User, rec.ID), lastUsedKey(rec.ID), alertKey(rec.ID)}
		keys = append(keys, listKeys(&rec)...)
		if rec.Kind == Permanent {
			keys = append(keys, expiryKey(rec.ExpiresAt, rec.ID))
		}
		if ownsName[i] {
			keys = append(keys, nameKey(rec.User, rec.Name))
		}
		for _, k := range keys {
			if err := del(w, k); err != nil {
				return err
			}
		}
		w.Publish(tokenKey(rec.ID), rec.Hash[:])
	}
	return nil
}

// tokenViews turns records into the metadata callers see: the status at
// now and the last use, the later of what this node saw (in memory) and
// what any node flushed to storage; the last use's address and the
// scopes' use as flushed.
func (s *Store) tokenViews(r kv.Reader, recs []tokenRecord, now time.Time) ([]Token, error) {
	out := make([]Token, len(recs))
	keys := make([]string, len(recs))
	for i := range recs {
		out[i] = recs[i].Token
		out[i].Status = out[i].StatusAt(now)
		keys[i] = lastUsedKey(recs[i].ID)
		if used := s.tokens.LastUsed(recs[i].Hash); !used.IsZero() {
			out[i].LastUsedAt = &used
		}
	}
	err := r.GetMany(keys, func(i int, val []byte) error {
		use := decodeUse(val)
		if use.at == 0 {
			return nil
		}
		stored := nanosTime(use.at)
		if out[i].LastUsedAt == nil || stored.After(*out[i].LastUsedAt) {
			out[i].LastUsedAt = &stored
		}
		out[i].LastUsedIP, out[i].ScopeUsage = use.IP, use.scopeUsage()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: read last use: %w", err)
	}
	return out, nil
}

// orEmpty returns s, or an empty slice for nil, so JSON says [] not null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// DeleteToken deletes a token of the given user. A token of someone else
// is reported as not found, so ids of other users' tokens are not probed.
func (s *Store) DeleteToken(ctx context.Context, user, id string) error {
	return s.update(ctx, func(w *writeTxn) error {
		rec, found, err := newLiveTokens(w, w.now).get(id)
		if err != nil {
			return err
		}
		if !found || rec.User != user {
			return notUsersToken(user, id)
		}
		if err := deleteToken(w, rec); err != nil {
			return err
		}
		w.record(ctx, ActionTokenDelete, id, fmt.Sprintf("user=%s name=%q kind=%s", rec.User, rec.Name, rec.Kind))
		return nil
	})
}

// Logout deletes a temporary token.
func (s *Store) Logout(ctx context.Context, id string) error {
	return s.update(ctx, func(w *writeTxn) error {
		rec, found, err := newLiveTokens(w, w.now).get(id)
		if err != nil {
			return err
		}
		if !found {
			return tokenNotFound(id)
		}
		if rec.Kind != Temporary {
			return fmt.Errorf("%w: token %q is a permanent token; only login tokens can log out (delete permanent tokens instead)", ErrInvalid, id)
		}
		if err := deleteToken(w, rec); err != nil {
			return err
		}
		w.record(ctx, ActionLogout, id, "user="+rec.User)
		return nil
	})
}

// RotateToken replaces an active permanent token with a new one of the same
// name expiring at expiresAt; the old one is revoked after grace.
func (s *Store) RotateToken(ctx context.Context, user, id string, grace time.Duration, expiresAt time.Time) (string, Token, error) {
	if grace < 0 {
		return "", Token{}, fmt.Errorf("%w: grace must not be negative", ErrInvalid)
	}
	var sec string
	var meta Token
	err := s.update(ctx, func(w *writeTxn) error {
		old, err := rotatable(w, user, id)
		if err != nil {
			return err
		}
		if _, err := checkTokenOwner(w, user); err != nil {
			return err
		}
		// Free the name for the new token; the old one keeps working until
		// its revocation but no longer owns the name.
		if err := del(w, nameKey(user, old.Name)); err != nil {
			return err
		}
		// The name was freed just above.
		// The new token keeps the old one's scopes and networks.
		sec, meta, err = s.mint(ctx, w, NewToken{User: user, Name: old.Name, Kind: Permanent, ExpiresAt: expiresAt, CreatedBy: CallerFrom(ctx).Name,
			Scopes: old.Scopes, AllowedCIDRs: old.AllowedCIDRs}, true)
		if err != nil {
			return err
		}
		revokeAt := w.now.Add(grace)
		old.RevokedAt, old.RotatedTo = &revokeAt, meta.ID
		if err := s.putTokenRecord(w, &old); err != nil {
			return err
		}
		w.record(ctx, ActionTokenRotate, id, fmt.Sprintf("user=%s name=%q new_token=%s grace=%s", user, old.Name, meta.ID, grace))
		return nil
	})
	if err != nil {
		return "", Token{}, err
	}
	return sec, meta, nil
}

// UpdateToken narrows a token of the given user: it may lose scopes (a
// scope it does not hold is refused: create a new token for it) and have
// its allowed networks replaced. Every node refuses what it lost on its
// next request once the change reaches it.
func (s *Store) UpdateToken(ctx context.Context, user, id string, p TokenPatch) (Token, error) {
	if p.AllowedCIDRs != nil {
		cidrs, err := checkNetworks(*p.AllowedCIDRs)
		if err != nil {
			return Token{}, err
		}
		p.AllowedCIDRs = &cidrs
	}
	if p.Scopes != nil {
		scopes, err := checkScopeNames(*p.Scopes)
		if err != nil {
			return Token{}, err
		}
		p.Scopes = &scopes
	}
	var out Token
	err := s.update(ctx, func(w *writeTxn) error {
		rec, found, err := newLiveTokens(w, w.now).get(id)
		if err != nil {
			return err
		}
		if !found || rec.User != user {
			return notUsersToken(user, id)
		}
		var changed []string
		if p.Scopes != nil && !slices.Equal(*p.Scopes, rec.Scopes) {
			if n := beyond(*p.Scopes, rec.Scopes); n != "" {
				return fmt.Errorf("%w: scopes: token %q does not hold scope %q; scopes can only be removed (create a new token to add one)", ErrInvalid, id, n)
			}
			changed = append(changed, fmt.Sprintf("scopes=%s (was %s)", describeScopes(*p.Scopes), describeScopes(rec.Scopes)))
			rec.Scopes = orEmpty(*p.Scopes)
		}
		if p.AllowedCIDRs != nil && !slices.Equal(*p.AllowedCIDRs, rec.AllowedCIDRs) {
			changed = append(changed, fmt.Sprintf("allowed_cidrs=%s (was %s)", describeNetworks(*p.AllowedCIDRs), describeNetworks(rec.AllowedCIDRs)))
			rec.AllowedCIDRs = orEmpty(*p.AllowedCIDRs)
		}
		if len(changed) > 0 {
			if err := s.putTokenRecord(w, &rec); err != nil {
				return err
			}
			w.record(ctx, ActionTokenUpdate, id, fmt.Sprintf("user=%s name=%q changed %s", rec.User, rec.Name, strings.Join(changed, ", ")))
		}
		views, err := s.tokenViews(w, []tokenRecord{rec}, w.now)
		if err != nil {
			return err
		}
		out = views[0]
		return nil
	})
	return out, err
}

// rotatable returns the user's token id if it can be rotated.
func rotatable(w *writeTxn, user, id string) (tokenRecord, error) {
	old, found, err := newLiveTokens(w, w.now).get(id)
	if err != nil {
		return old, err
	}
	switch {
	case !found || old.User != user:
		return old, notUsersToken(user, id)
	case old.Kind != Permanent:
		return old, fmt.Errorf("%w: only permanent tokens can be rotated; log in again for a new login token", ErrInvalid)
	case old.RotatedTo != "":
		return old, fmt.Errorf("%w: token %q was already rotated to %q", ErrConflict, id, old.RotatedTo)
	case old.StatusAt(w.now) != StatusActive:
		return old, fmt.Errorf("%w: token %q is %s; create a new token instead", ErrInvalid, id, old.StatusAt(w.now))
	}
	return old, nil
}

// NewTokenID's ids are what the verifier keeps inline.
var _ = [1]struct{}{}[len("tok_")+20-verifier.TokenIDLen]

// NewTokenID returns a fresh non-secret token handle for URLs, logs and
// metric labels.
func NewTokenID() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "tok_" + hex.EncodeToString(b[:])
}
