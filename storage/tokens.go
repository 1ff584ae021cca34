package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

const (
	maxTokenNameLen = 64
	// loginTokenName names temporary tokens created without a name.
	loginTokenName = "login"
	// flushChunk bounds the last-use updates written per transaction, so
	// the write lock is released between chunks.
	flushChunk = 1000
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
func (s *Badger) CreateToken(ctx context.Context, t NewToken) (string, Token, error) {
	t, err := checkNewToken(ctx, t)
	if err != nil {
		return "", Token{}, err
	}
	secret := NewSecret(t.Kind)
	var meta Token
	err = s.update(func(w *writeTxn) error {
		if err := s.checkTokenOwner(w.txn, t.User); err != nil {
			return err
		}
		rec := tokenRecord{Hash: HashSecret(secret), Token: Token{
			ID: NewTokenID(), User: t.User, Name: t.Name, Kind: t.Kind,
			CreatedAt: w.now, CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt.UTC(),
		}}
		if err := s.insertToken(w, &rec); err != nil {
			return err
		}
		action, detail := ActionTokenCreate, fmt.Sprintf("user=%s name=%q expires_at=%s", rec.User, rec.Name, rec.ExpiresAt.Format(time.RFC3339))
		if t.Kind == Temporary {
			action, detail = ActionLogin, fmt.Sprintf("user=%s expires_at=%s", rec.User, rec.ExpiresAt.Format(time.RFC3339))
		}
		w.record(ctx, action, rec.ID, detail)
		meta = rec.Token
		meta.Status = rec.StatusAt(w.now)
		return nil
	})
	if err != nil {
		return "", Token{}, err
	}
	return secret, meta, nil
}

// checkNewToken validates a token request and fills in its defaults: an
// unnamed temporary token is a login token, and the creator defaults to
// the context's actor. CreateToken and CreateTokens share it so a batch
// accepts exactly what single creates accept.
func checkNewToken(ctx context.Context, t NewToken) (NewToken, error) {
	if t.Kind != Permanent && t.Kind != Temporary {
		return t, fmt.Errorf("%w: token kind must be %q or %q", ErrInvalid, Permanent, Temporary)
	}
	if t.Kind == Temporary && t.Name == "" {
		t.Name = loginTokenName
	}
	if err := validateTokenName(t.Name); err != nil {
		return t, err
	}
	if t.CreatedBy == "" {
		t.CreatedBy, _ = ActorFrom(ctx)
	}
	return t, nil
}

// checkTokenOwner refuses tokens for missing or disabled users.
func (s *Badger) checkTokenOwner(txn *badger.Txn, name string) error {
	u, err := getUser(txn, name)
	if err != nil {
		return err
	}
	if u.Disabled {
		return fmt.Errorf("%w: user %q is disabled; enable the user before creating tokens", ErrInvalid, name)
	}
	return nil
}

// insertToken writes a new token with its index keys and schedules its
// index entry. A permanent token's name must be free for its user.
func (s *Badger) insertToken(w *writeTxn, rec *tokenRecord) error {
	if !rec.ExpiresAt.After(w.now) {
		return fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.ExpiresAt.After(latestExpiry) {
		return fmt.Errorf("%w: expires_at %s is too far in the future", ErrInvalid, rec.ExpiresAt.Format(time.RFC3339))
	}
	if rec.Kind == Permanent {
		taken, err := exists(w.txn, nameKey(rec.User, rec.Name))
		if err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("%w: user %q already has a token named %q", ErrConflict, rec.User, rec.Name)
		}
		if err := set(w.txn, nameKey(rec.User, rec.Name), []byte(rec.ID)); err != nil {
			return err
		}
	}
	if err := s.putTokenRecord(w.txn, rec); err != nil {
		return err
	}
	if err := s.setMaybeTTL(w.txn, rec, userTokenKey(rec.User, rec.ID), nil); err != nil {
		return err
	}
	w.then(func() {
		s.idx.add(tokenFields{
			hash: rec.Hash, id: []byte(rec.ID), user: s.idx.users.byName[rec.User],
			kind: kindByte(rec.Kind), expires: rec.ExpiresAt.UnixNano(),
		}, w.now.UnixNano())
	})
	return nil
}

// putTokenRecord writes a token record. Every write of t/<id> goes through
// here, so a permanent token's copy under its expiry key (which
// ForEachPermanentToken reads instead of t/<id>) never differs from it.
func (s *Badger) putTokenRecord(txn *badger.Txn, rec *tokenRecord) error {
	val := rec.marshal()
	if rec.Kind == Permanent {
		if err := set(txn, expiryKey(rec.ExpiresAt, rec.ID), val); err != nil {
			return err
		}
	}
	return s.setMaybeTTL(txn, rec, tokenKey(rec.ID), val)
}

// setMaybeTTL writes a key that belongs to token rec; a temporary token's
// keys expire on disk shortly after the token does.
func (s *Badger) setMaybeTTL(txn *badger.Txn, rec *tokenRecord, key string, val []byte) error {
	e := badger.NewEntry([]byte(key), val)
	if rec.Kind == Temporary {
		e = e.WithTTL(s.ttlUntil(rec.ExpiresAt))
	}
	return setEntry(txn, e)
}

// getLiveToken reads a token record. An expired temporary token counts as
// gone, whether or not Badger has collected it yet, and so does a token of
// a deleted user that is still being purged.
func (s *Badger) getLiveToken(txn *badger.Txn, id string) (tokenRecord, bool, error) {
	rec, found, err := getToken(txn, id)
	if err != nil || !found {
		return rec, found, err
	}
	if rec.Kind == Temporary && !rec.ExpiresAt.After(s.clock.Now()) || s.ownerDeleted(&rec) {
		return tokenRecord{}, false, nil
	}
	return rec, true, nil
}

// ownerDeleted reports whether rec's user has been deleted and rec is
// only waiting for the purge (see DeleteUser): such a token is gone.
func (s *Badger) ownerDeleted(rec *tokenRecord) bool {
	st, ok := s.idx.state(rec.Hash)
	return ok && st.userDeleted
}

func getToken(txn *badger.Txn, id string) (tokenRecord, bool, error) {
	if !plausibleTokenID(id) {
		return tokenRecord{}, false, nil
	}
	val, found, err := getValue(txn, tokenKey(id))
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

// plausibleTokenID rejects ids that cannot exist before they reach Badger,
// whose keys are limited in size.
func plausibleTokenID(id string) bool { return id != "" && len(id) <= maxTokenIDLen }

func tokenNotFound(id string) error {
	return fmt.Errorf("%w: token %q does not exist", ErrNotFound, short(id))
}

func notUsersToken(user, id string) error {
	return fmt.Errorf("%w: user %q has no token %q", ErrNotFound, short(user), short(id))
}

// deleteToken removes a token and everything keyed by its id, and
// schedules its removal from the index.
func (s *Badger) deleteToken(w *writeTxn, rec tokenRecord) error {
	keys := []string{tokenKey(rec.ID), userTokenKey(rec.User, rec.ID), lastUsedKey(rec.ID), alertKey(rec.ID)}
	if rec.Kind == Permanent {
		keys = append(keys, expiryKey(rec.ExpiresAt, rec.ID))
		owner, found, err := getValue(w.txn, nameKey(rec.User, rec.Name))
		if err != nil {
			return err
		}
		if found && string(owner) == rec.ID {
			keys = append(keys, nameKey(rec.User, rec.Name))
		}
	}
	for _, k := range keys {
		if err := del(w.txn, k); err != nil {
			return err
		}
	}
	w.then(func() { s.idx.remove(rec.Hash) })
	return nil
}

// GetToken returns a token's metadata.
func (s *Badger) GetToken(_ context.Context, id string) (Token, error) {
	var t Token
	err := s.view(func(txn *badger.Txn) error {
		rec, found, err := s.getLiveToken(txn, id)
		if err != nil {
			return err
		}
		if !found {
			return tokenNotFound(id)
		}
		t, err = s.tokenView(txn, rec, s.clock.Now())
		return err
	})
	return t, err
}

// tokenView is the metadata callers see: status at now and the last use.
// The index holds the last use of every token it has: the flushed one from
// open (see lastUseCursor) and every use since, which only ever reach the
// disk from there. Only a token missing from the index (a record the
// loader skipped) needs its last use read from disk.
func (s *Badger) tokenView(txn *badger.Txn, rec tokenRecord, now time.Time) (Token, error) {
	t := rec.Token
	t.Status = t.StatusAt(now)
	var used int64
	if st, ok := s.idx.state(rec.Hash); ok {
		used = st.lastUsed
	} else if val, found, err := getValue(txn, lastUsedKey(rec.ID)); err != nil {
		return Token{}, err
	} else if found && len(val) == 8 {
		used = int64(binary.BigEndian.Uint64(val))
	}
	if used != 0 {
		lu := nanosTime(used)
		t.LastUsedAt = &lu
	}
	return t, nil
}

// ListUserTokens returns a user's tokens, oldest first. Expired temporary
// tokens are gone; expired and revoked permanent tokens are listed.
func (s *Badger) ListUserTokens(_ context.Context, name string) ([]Token, error) {
	tokens := []Token{}
	err := s.view(func(txn *badger.Txn) error {
		if _, err := getUser(txn, name); err != nil {
			return err
		}
		now := s.clock.Now()
		prefix := prefixUserToken + name + "/"
		return scan(txn, prefix, false, func(key, _ []byte) error {
			return s.appendToken(txn, string(key[len(prefix):]), now, TokenFilter{}, &tokens)
		})
	})
	sortTokens(tokens)
	return tokens, err
}

// ListTokens returns every token that passes f, by user and creation time.
func (s *Badger) ListTokens(_ context.Context, f TokenFilter) ([]Token, error) {
	tokens := []Token{}
	err := s.view(func(txn *badger.Txn) error {
		now := s.clock.Now()
		return scan(txn, prefixToken, false, func(key, _ []byte) error {
			return s.appendToken(txn, string(key[len(prefixToken):]), now, f, &tokens)
		})
	})
	sortTokens(tokens)
	return tokens, err
}

func (s *Badger) appendToken(txn *badger.Txn, id string, now time.Time, f TokenFilter, out *[]Token) error {
	rec, found, err := s.getLiveToken(txn, id)
	if err != nil || !found {
		return err
	}
	if f.Kind != "" && rec.Kind != f.Kind {
		return nil
	}
	if !f.ExpiringBefore.IsZero() && !rec.ExpiresAt.Before(f.ExpiringBefore) {
		return nil
	}
	t, err := s.tokenView(txn, rec, now)
	if err != nil {
		return err
	}
	*out = append(*out, t)
	return nil
}

func sortTokens(ts []Token) {
	slices.SortFunc(ts, func(a, b Token) int {
		return cmp.Or(strings.Compare(a.User, b.User), a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
}

// DeleteToken deletes a token of the given user. A token of someone else
// is reported as not found, so ids of other users' tokens are not probed.
func (s *Badger) DeleteToken(ctx context.Context, user, id string) error {
	return s.update(func(w *writeTxn) error {
		rec, found, err := s.getLiveToken(w.txn, id)
		if err != nil {
			return err
		}
		if !found || rec.User != user {
			return notUsersToken(user, id)
		}
		if err := s.deleteToken(w, rec); err != nil {
			return err
		}
		w.record(ctx, ActionTokenDelete, id, fmt.Sprintf("user=%s name=%q kind=%s", rec.User, rec.Name, rec.Kind))
		return nil
	})
}

// Logout deletes a temporary token.
func (s *Badger) Logout(ctx context.Context, id string) error {
	return s.update(func(w *writeTxn) error {
		rec, found, err := s.getLiveToken(w.txn, id)
		if err != nil {
			return err
		}
		if !found {
			return tokenNotFound(id)
		}
		if rec.Kind != Temporary {
			return fmt.Errorf("%w: token %q is a permanent token; only login tokens can log out (delete permanent tokens instead)", ErrInvalid, id)
		}
		if err := s.deleteToken(w, rec); err != nil {
			return err
		}
		w.record(ctx, ActionLogout, id, "user="+rec.User)
		return nil
	})
}

// RotateToken replaces an active permanent token with a new one of the same
// name expiring at expiresAt; the old one is revoked after grace.
func (s *Badger) RotateToken(ctx context.Context, user, id string, grace time.Duration, expiresAt time.Time) (string, Token, error) {
	if grace < 0 {
		return "", Token{}, fmt.Errorf("%w: grace must not be negative", ErrInvalid)
	}
	secret := NewSecret(Permanent)
	var meta Token
	err := s.update(func(w *writeTxn) error {
		old, err := s.rotatable(w, user, id)
		if err != nil {
			return err
		}
		if err := s.checkTokenOwner(w.txn, user); err != nil {
			return err
		}
		// Free the name for the new token; the old one keeps working until
		// its revocation but no longer owns the name.
		if err := del(w.txn, nameKey(user, old.Name)); err != nil {
			return err
		}
		rec := tokenRecord{Hash: HashSecret(secret), Token: Token{
			ID: NewTokenID(), User: user, Name: old.Name, Kind: Permanent,
			CreatedAt: w.now, CreatedBy: actorOr(ctx), ExpiresAt: expiresAt.UTC(),
		}}
		if err := s.insertToken(w, &rec); err != nil {
			return err
		}
		revokeAt := w.now.Add(grace)
		old.RevokedAt, old.RotatedTo = &revokeAt, rec.ID
		if err := s.putTokenRecord(w.txn, &old); err != nil {
			return err
		}
		w.then(func() { s.idx.revoke(old.Hash, revokeAt.UnixNano(), w.now.UnixNano()) })
		w.record(ctx, ActionTokenRotate, id, fmt.Sprintf("user=%s name=%q new_token=%s grace=%s", user, old.Name, rec.ID, grace))
		meta = rec.Token
		meta.Status = rec.StatusAt(w.now)
		return nil
	})
	if err != nil {
		return "", Token{}, err
	}
	return secret, meta, nil
}

// rotatable returns the user's token id if it can be rotated.
func (s *Badger) rotatable(w *writeTxn, user, id string) (tokenRecord, error) {
	old, found, err := s.getLiveToken(w.txn, id)
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

func actorOr(ctx context.Context) string {
	a, _ := ActorFrom(ctx)
	return a
}

// ForEachPermanentToken walks the permanent tokens in expiry order inside
// one read transaction, so memory stays bounded by one token. It reads the
// records stored under the expiry keys, one sequential scan, rather than
// looking up each t/<id>: at a million tokens those point reads cost tens
// of seconds per walk. An empty value is an expiry key written before the
// records were copied there, and is resolved through t/<id>.
func (s *Badger) ForEachPermanentToken(ctx context.Context, fn func(Token) error) error {
	return s.view(func(txn *badger.Txn) error {
		now := s.clock.Now()
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixExpiry)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rec, found, err := expiryRecord(txn, it.Item())
			if err != nil {
				return err
			}
			if !found || s.ownerDeleted(&rec) {
				continue
			}
			t, err := s.tokenView(txn, rec, now)
			if err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return err
			}
		}
		return nil
	})
}

// expiryRecord decodes the token record stored under an expiry key, or
// reads it from t/<id> if the key predates those copies (empty value).
func expiryRecord(txn *badger.Txn, item *badger.Item) (tokenRecord, bool, error) {
	key := item.Key()
	if len(key) < len(prefixExpiry)+8+1 {
		return tokenRecord{}, false, fmt.Errorf("storage: corrupt expiry index key")
	}
	id := string(key[len(prefixExpiry)+8+1:])
	var rec tokenRecord
	empty := false
	err := item.Value(func(val []byte) error {
		if len(val) == 0 {
			empty = true
			return nil
		}
		var err error
		rec, err = unmarshalToken(val)
		return err
	})
	if err != nil {
		return tokenRecord{}, false, fmt.Errorf("storage: read expiry index: %w", err)
	}
	if empty {
		return getToken(txn, id)
	}
	if rec.ID != id {
		return tokenRecord{}, false, fmt.Errorf("storage: expiry index entry for token %q holds token %q", id, rec.ID)
	}
	return rec, true, nil
}

// CountTokens counts active tokens by kind from memory.
func (s *Badger) CountTokens() map[TokenKind]int {
	return s.idx.counts(s.clock.Now())
}

// flushLastUsed writes the batched last-use times, a chunk per transaction.
// A token deleted meanwhile is skipped (the check and the write happen
// under the write lock, so no orphan lu/ key is left behind).
func (s *Badger) flushLastUsed() {
	dirty := s.idx.takeDirty()
	for len(dirty) > 0 {
		n := min(len(dirty), flushChunk)
		if !s.flushChunk(dirty[:n], dirty) {
			return
		}
		dirty = dirty[n:]
	}
}

// flushChunk writes the last uses of chunk in one transaction. If that
// fails it puts all of pending (chunk and what follows) back in the queue
// before releasing the write lock, under which no slot is reused, and
// reports false.
func (s *Badger) flushChunk(chunk, pending []slotRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if err := s.writeLastUses(chunk); err != nil {
		s.log.Warn("could not save last-used times; will retry", zap.Int("tokens", len(chunk)), zap.Error(err))
		s.idx.requeue(pending)
		return false
	}
	return true
}

func (s *Badger) writeLastUses(chunk []slotRef) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, r := range chunk {
		e := s.idx.slots.at(r.slot)
		if e.gen.Load() != r.gen {
			continue // deleted; the slot may hold another token now
		}
		e.dirty.Store(false) // before reading, so a later use re-queues it
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(e.lastUsed.Load()))
		be := badger.NewEntry([]byte(lastUsedKey(e.tokenID())), v[:])
		if e.kind == kindByteTemporary {
			be = be.WithTTL(s.ttlUntil(time.Unix(0, e.expires)))
		}
		if err := setEntry(txn, be); err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("storage: commit last-used times: %w", err)
	}
	return nil
}
