package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

const (
	maxUsernameLen = 64
	maxPasswordLen = 72 // bcrypt ignores anything longer, so refuse it
	maxEmailLen    = 254
)

// ValidateUsername checks the username rule: 1-64 characters of a-z, 0-9,
// '.', '_' and '-', starting with a letter or digit.
func ValidateUsername(name string) error {
	if name == "" || len(name) > maxUsernameLen {
		return fmt.Errorf("%w: username must be 1 to %d characters long", ErrInvalid, maxUsernameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%w: username %q must start with a lowercase letter or a digit", ErrInvalid, name)
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w: username %q may only contain lowercase letters, digits, '.', '_' and '-'", ErrInvalid, name)
		}
	}
	return nil
}

// validateEmail accepts an empty email (a bootstrap admin has none) or one
// plain address like ops@example.com.
func validateEmail(email string) error {
	if email == "" {
		return nil
	}
	if len(email) > maxEmailLen {
		return fmt.Errorf("%w: email must be at most %d characters long", ErrInvalid, maxEmailLen)
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Name != "" || a.Address != email {
		return fmt.Errorf("%w: email %q is not a plain address like ops@example.com", ErrInvalid, email)
	}
	return nil
}

func validatePassword(pw string) error {
	switch {
	case pw == "":
		return fmt.Errorf("%w: password must not be empty", ErrInvalid)
	case len(pw) > maxPasswordLen:
		return fmt.Errorf("%w: password must be at most %d bytes long", ErrInvalid, maxPasswordLen)
	}
	return nil
}

// newUserRecord validates u and hashes its password. It runs before the
// write lock is taken, so a slow bcrypt never holds up other writers.
func (s *Store) newUserRecord(u NewUser) (userRecord, error) {
	if err := ValidateUsername(u.Username); err != nil {
		return userRecord{}, err
	}
	if err := validateEmail(u.Email); err != nil {
		return userRecord{}, err
	}
	if err := validatePassword(u.Password); err != nil {
		return userRecord{}, err
	}
	scopes, err := s.catalogue().checkScopes("scopes", u.Scopes)
	if err != nil {
		return userRecord{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(u.Password), s.cost)
	if err != nil {
		return userRecord{}, fmt.Errorf("storage: hash password: %w", err)
	}
	return userRecord{User: User{Username: u.Username, Email: u.Email, Admin: u.Admin, Scopes: scopes}, PasswordHash: hash}, nil
}

// CreateUser adds a user; ErrConflict if the name is taken.
func (s *Store) CreateUser(ctx context.Context, u NewUser) (User, error) {
	rec, err := s.newUserRecord(u)
	if err != nil {
		return User{}, err
	}
	err = s.update(ctx, func(w *writeTxn) error {
		return s.insertUser(ctx, w, &rec)
	})
	if err != nil {
		return User{}, err
	}
	return rec.User, nil
}

// insertUser writes a new user and its audit entry.
func (s *Store) insertUser(ctx context.Context, w *writeTxn, rec *userRecord) error {
	purging, err := exists(w, deletedUserKey(rec.Username))
	if err != nil {
		return err
	}
	if purging {
		// The old user's tokens are still stored under this name; a new
		// user must not inherit them.
		return fmt.Errorf("%w: user %q is still being deleted; try again when the deletion has finished", ErrConflict, rec.Username)
	}
	taken, err := exists(w, userKey(rec.Username))
	if err != nil {
		return err
	}
	if taken {
		return fmt.Errorf("%w: user %q already exists", ErrConflict, rec.Username)
	}
	rec.CreatedAt = w.now
	if err := putUser(w, rec); err != nil {
		return err
	}
	w.record(ctx, ActionUserCreate, rec.Username, fmt.Sprintf("admin=%t scopes=%s", rec.Admin, describeScopes(rec.Scopes)))
	return nil
}

// EnsureAdmin creates u as an admin if no enabled admin exists.
func (s *Store) EnsureAdmin(ctx context.Context, u NewUser) (bool, error) {
	u.Admin = true
	rec, err := s.newUserRecord(u)
	if err != nil {
		return false, err
	}
	created := false
	err = s.update(ctx, func(w *writeTxn) error {
		created = false
		admins, err := enabledAdmins(w)
		if err != nil || len(admins) > 0 {
			return err
		}
		if err := s.insertUser(ctx, w, &rec); err != nil {
			return err
		}
		created = true
		return nil
	})
	return created, err
}

// putUser writes a user record and publishes the change, so every node's
// index learns the user's admin and disabled flags.
func putUser(w kv.Writer, rec *userRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("storage: encode user: %w", err)
	}
	if err := set(w, userKey(rec.Username), b); err != nil {
		return err
	}
	w.Publish(userKey(rec.Username), nil)
	return nil
}

func getUser(r kv.Reader, name string) (userRecord, error) {
	if ValidateUsername(name) != nil { // cannot exist; also keeps huge input away from the backend's key limits
		return userRecord{}, fmt.Errorf("%w: user %q does not exist", ErrNotFound, short(name))
	}
	val, found, err := getValue(r, userKey(name))
	if err != nil {
		return userRecord{}, err
	}
	if !found {
		return userRecord{}, fmt.Errorf("%w: user %q does not exist", ErrNotFound, name)
	}
	var rec userRecord
	if err := json.Unmarshal(val, &rec); err != nil {
		return userRecord{}, fmt.Errorf("storage: corrupt user record: %w", err)
	}
	rec.Scopes = orEmpty(rec.Scopes) // a record from before scopes
	return rec, nil
}

// enabledAdmins lists the usernames of admins who are not disabled.
func enabledAdmins(r kv.Reader) ([]string, error) {
	var names []string
	err := r.Scan(prefixUser, kv.ScanOptions{}, func(_, val []byte) error {
		var u User
		if err := json.Unmarshal(val, &u); err != nil {
			return fmt.Errorf("storage: corrupt user record: %w", err)
		}
		if u.Admin && !u.Disabled {
			names = append(names, u.Username)
		}
		return nil
	})
	return names, err
}

// GetUser returns a user or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, name string) (User, error) {
	var rec userRecord
	err := s.view(ctx, func(r kv.Reader) error {
		var err error
		rec, err = getUser(r, name)
		return err
	})
	return rec.User, err
}

// decodeUser decodes a stored user record, leaving its password hash out.
func decodeUser(val []byte) (User, error) {
	var u User
	if err := json.Unmarshal(val, &u); err != nil {
		return User{}, fmt.Errorf("storage: corrupt user record: %w", err)
	}
	u.Scopes = orEmpty(u.Scopes) // a record from before scopes
	return u, nil
}

// UpdateUser changes the fields set in p. Demoting or disabling the last
// enabled admin is refused with ErrLastAdmin. Disabling a user ends their
// login sessions (temporary tokens); permanent tokens stop working until
// the user is enabled again. A new password ends the login sessions too,
// except p.KeepSession; permanent tokens are separate credentials and
// keep working.
func (s *Store) UpdateUser(ctx context.Context, name string, p UserPatch) (User, error) {
	var newHash []byte
	if p.Email != nil {
		if err := validateEmail(*p.Email); err != nil {
			return User{}, err
		}
	}
	if p.Password != nil {
		if err := validatePassword(*p.Password); err != nil {
			return User{}, err
		}
		h, err := bcrypt.GenerateFromPassword([]byte(*p.Password), s.cost)
		if err != nil {
			return User{}, fmt.Errorf("storage: hash password: %w", err)
		}
		newHash = h
	}
	if p.Scopes != nil {
		scopes, err := s.catalogue().checkScopes("scopes", *p.Scopes)
		if err != nil {
			return User{}, err
		}
		p.Scopes = &scopes
	}
	var out User
	var disabling, newPassword bool
	err := s.update(ctx, func(w *writeTxn) error {
		rec, err := getUser(w, name)
		if err != nil {
			return err
		}
		wasAdmin := rec.Admin && !rec.Disabled
		changed := applyPatch(&rec, p, newHash)
		out = rec.User
		if len(changed) == 0 {
			return nil
		}
		if wasAdmin && (!rec.Admin || rec.Disabled) {
			if err := checkNotLastAdmin(w, name, "demote or disable"); err != nil {
				return err
			}
		}
		if err := putUser(w, &rec); err != nil {
			return err
		}
		disabling = rec.Disabled && slices.Contains(changed, "disabled=true")
		newPassword = slices.Contains(changed, "password")
		switch {
		case disabling:
			changed = append(changed, "login sessions ended")
		case newPassword && p.KeepSession != "":
			changed = append(changed, "other login sessions ended")
		case newPassword:
			changed = append(changed, "login sessions ended")
		}
		w.record(ctx, ActionUserUpdate, name, "changed "+strings.Join(changed, ", "))
		return nil
	})
	if err != nil {
		return User{}, err
	}
	if disabling || newPassword {
		// The login sessions are deleted in batches after the commit, so
		// a user with any number of them can be changed (one transaction
		// would hit Badger's size limit at about 25k). A disabled user's
		// tokens stopped verifying with the commit already.
		keep := p.KeepSession
		if disabling {
			keep = ""
		}
		if err := s.endSessions(ctx, name, keep); err != nil {
			return User{}, err
		}
	}
	return out, nil
}

// endSessions deletes a user's temporary tokens except the one with id
// keep, a batch per transaction. Should it stop half-way (a crash),
// the sessions left expire with their session lifetime; a disabled user's
// do not verify meanwhile.
func (s *Store) endSessions(ctx context.Context, name, keep string) error {
	return s.inBatches(ctx, userTokensPrefix(name), kv.ScanOptions{KeysOnly: true}, func(w *writeTxn, batch []batchItem) error {
		keys := make([]string, 0, len(batch))
		for _, b := range batch {
			if b.suffix != keep {
				keys = append(keys, tokenKey(b.suffix))
			}
		}
		return w.GetMany(keys, func(_ int, val []byte) error {
			rec, err := unmarshalToken(val)
			if err != nil || rec.Kind != Temporary {
				return err
			}
			return deleteToken(w, rec)
		})
	}, nil)
}

// applyPatch changes rec and returns a description of each changed field,
// naming the password but never showing it.
func applyPatch(rec *userRecord, p UserPatch, newHash []byte) []string {
	var changed []string
	if p.Email != nil && *p.Email != rec.Email {
		rec.Email = *p.Email
		changed = append(changed, "email")
	}
	if newHash != nil {
		rec.PasswordHash = newHash
		changed = append(changed, "password")
	}
	if p.Admin != nil && *p.Admin != rec.Admin {
		rec.Admin = *p.Admin
		changed = append(changed, fmt.Sprintf("admin=%t", rec.Admin))
	}
	if p.Disabled != nil && *p.Disabled != rec.Disabled {
		rec.Disabled = *p.Disabled
		changed = append(changed, fmt.Sprintf("disabled=%t", rec.Disabled))
	}
	if p.Scopes != nil && !slices.Equal(*p.Scopes, rec.Scopes) {
		changed = append(changed, fmt.Sprintf("scopes=%s (was %s)", describeScopes(*p.Scopes), describeScopes(rec.Scopes)))
		rec.Scopes = *p.Scopes
	}
	return changed
}

// checkNotLastAdmin refuses to take away the admin rights of name if no
// other enabled admin would remain.
func checkNotLastAdmin(r kv.Reader, name, verb string) error {
	admins, err := enabledAdmins(r)
	if err != nil {
		return err
	}
	for _, a := range admins {
		if a != name {
			return nil
		}
	}
	return fmt.Errorf("%w: cannot %s %q, the last admin; make another user admin first", ErrLastAdmin, verb, name)
}

// DeleteUser removes the user and all their tokens, with their alert
// states and last-use records. A user can own more tokens than one
// transaction should delete, so it happens in two steps. The first
// transaction deletes the user record, leaves a tombstone (ud/<name>) and
// writes the audit entry; once it commits, the user's tokens stop
// verifying on every node and disappear from reads, and the name cannot be
// taken again until the second step, purgeUserTokens, has deleted the
// tokens in batches and removed the tombstone. If the process dies in
// between, the next start finishes the purge (see finishDeletions).
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.update(ctx, func(w *writeTxn) error {
		rec, err := getUser(w, name)
		if err != nil {
			return err
		}
		if rec.Admin && !rec.Disabled {
			if err := checkNotLastAdmin(w, name, "delete"); err != nil {
				return err
			}
		}
		n, err := countKeys(w, userTokensPrefix(name))
		if err != nil {
			return err
		}
		if err := del(w, userKey(name)); err != nil {
			return err
		}
		w.Publish(userKey(name), nil)
		if err := set(w, deletedUserKey(name), nil); err != nil {
			return err
		}
		w.record(ctx, ActionUserDelete, name, fmt.Sprintf("%d tokens deleted", n))
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.purgeUserTokens(ctx, name); err != nil {
		return fmt.Errorf("storage: user %q is deleted and their tokens no longer work, but removing the tokens from the database failed; they are removed at the next start: %w", name, err)
	}
	return nil
}

// dummyBcrypt returns a hash at the store's cost, made once, that
// CheckPassword compares against for unknown users so they take as long as
// known ones (the same defence as caddyauth's basic_auth).
func (s *Store) dummyBcrypt() []byte {
	s.dummyOnce.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte("not a real password, only for timing"), s.cost)
		if err != nil {
			panic(err) // only fails for an invalid cost, which GenerateFromPassword clamps
		}
		s.dummyHash = h
	})
	return s.dummyHash
}

// CheckPassword verifies a login. Every failure is the same ErrBadLogin,
// after the same bcrypt work.
func (s *Store) CheckPassword(ctx context.Context, name, password string) (User, error) {
	var rec userRecord
	found := false
	err := s.view(ctx, func(r kv.Reader) error {
		var err error
		rec, err = getUser(r, name)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, ErrNotFound):
			err = nil
		}
		return err
	})
	if err != nil {
		return User{}, err
	}
	hash := rec.PasswordHash
	if !found {
		hash = s.dummyBcrypt()
	}
	// CompareHashAndPassword compares in constant time. It silently uses
	// only the first 72 bytes, so a longer password (which no account can
	// have) is refused after the same work, not accepted by its prefix.
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && len(password) <= maxPasswordLen
	if !found || !ok || rec.Disabled {
		return User{}, fmt.Errorf("%w: wrong username or password, or the account is disabled", ErrBadLogin)
	}
	return rec.User, nil
}
