package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/bcrypt"
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
func (s *Badger) newUserRecord(u NewUser) (userRecord, error) {
	if err := ValidateUsername(u.Username); err != nil {
		return userRecord{}, err
	}
	if err := validateEmail(u.Email); err != nil {
		return userRecord{}, err
	}
	if err := validatePassword(u.Password); err != nil {
		return userRecord{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(u.Password), s.cost)
	if err != nil {
		return userRecord{}, fmt.Errorf("storage: hash password: %w", err)
	}
	return userRecord{User: User{Username: u.Username, Email: u.Email, Admin: u.Admin}, PasswordHash: hash}, nil
}

// CreateUser adds a user; ErrConflict if the name is taken.
func (s *Badger) CreateUser(ctx context.Context, u NewUser) (User, error) {
	rec, err := s.newUserRecord(u)
	if err != nil {
		return User{}, err
	}
	err = s.update(func(w *writeTxn) error {
		return s.insertUser(ctx, w, &rec)
	})
	if err != nil {
		return User{}, err
	}
	return rec.User, nil
}

// insertUser writes a new user and its audit entry; the caller holds the lock.
func (s *Badger) insertUser(ctx context.Context, w *writeTxn, rec *userRecord) error {
	if s.purging[rec.Username] {
		// The old user's tokens are still on disk under this name; a new
		// user must not inherit them.
		return fmt.Errorf("%w: user %q is still being deleted; try again when the deletion has finished", ErrConflict, rec.Username)
	}
	taken, err := exists(w.txn, userKey(rec.Username))
	if err != nil {
		return err
	}
	if taken {
		return fmt.Errorf("%w: user %q already exists", ErrConflict, rec.Username)
	}
	rec.CreatedAt = w.now
	if err := putUser(w.txn, rec); err != nil {
		return err
	}
	w.record(ctx, ActionUserCreate, rec.Username, fmt.Sprintf("admin=%t", rec.Admin))
	w.then(func() { s.idx.users.put(rec.User) })
	return nil
}

// EnsureAdmin creates u as an admin if no enabled admin exists.
func (s *Badger) EnsureAdmin(ctx context.Context, u NewUser) (bool, error) {
	u.Admin = true
	rec, err := s.newUserRecord(u)
	if err != nil {
		return false, err
	}
	created := false
	err = s.update(func(w *writeTxn) error {
		admins, err := enabledAdmins(w.txn)
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

func putUser(txn *badger.Txn, rec *userRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("storage: encode user: %w", err)
	}
	return set(txn, userKey(rec.Username), b)
}

func getUser(txn *badger.Txn, name string) (userRecord, error) {
	if ValidateUsername(name) != nil { // cannot exist; also keeps huge input away from Badger's key limit
		return userRecord{}, fmt.Errorf("%w: user %q does not exist", ErrNotFound, short(name))
	}
	val, found, err := getValue(txn, userKey(name))
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
	return rec, nil
}

// enabledAdmins lists the usernames of admins who are not disabled.
func enabledAdmins(txn *badger.Txn) ([]string, error) {
	var names []string
	err := scan(txn, prefixUser, true, func(_, val []byte) error {
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
func (s *Badger) GetUser(_ context.Context, name string) (User, error) {
	var rec userRecord
	err := s.view(func(txn *badger.Txn) error {
		var err error
		rec, err = getUser(txn, name)
		return err
	})
	return rec.User, err
}

// ListUsers returns every user, ordered by username.
func (s *Badger) ListUsers(context.Context) ([]User, error) {
	users := []User{}
	err := s.view(func(txn *badger.Txn) error {
		return scan(txn, prefixUser, true, func(_, val []byte) error {
			var u User
			if err := json.Unmarshal(val, &u); err != nil {
				return fmt.Errorf("storage: corrupt user record: %w", err)
			}
			users = append(users, u)
			return nil
		})
	})
	return users, err
}

// UpdateUser changes the fields set in p. Demoting or disabling the last
// enabled admin is refused with ErrLastAdmin. Disabling a user ends their
// login sessions (temporary tokens); permanent tokens stop working until
// the user is enabled again. A new password ends the login sessions too,
// except p.KeepSession; permanent tokens are separate credentials and
// keep working.
func (s *Badger) UpdateUser(ctx context.Context, name string, p UserPatch) (User, error) {
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
	var out User
	var disabling, newPassword bool
	err := s.update(func(w *writeTxn) error {
		rec, err := getUser(w.txn, name)
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
			if err := checkNotLastAdmin(w.txn, name, "demote or disable"); err != nil {
				return err
			}
		}
		if err := putUser(w.txn, &rec); err != nil {
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
		flags := userFlags(rec.User)
		w.then(func() {
			if st := s.idx.users.byName[name]; st != nil {
				st.flags.Store(flags)
			}
		})
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
		if err := s.endSessions(name, keep); err != nil {
			return User{}, err
		}
	}
	return out, nil
}

// endSessions deletes a user's temporary tokens except the one with id
// keep, purgeBatch per transaction. Should it stop half-way (a crash),
// the sessions left expire with their session lifetime; a disabled user's
// do not verify meanwhile.
func (s *Badger) endSessions(name, keep string) error {
	for {
		var ended int
		err := s.update(func(w *writeTxn) error {
			var err error
			ended, err = s.deleteUserTokens(w, name, Temporary, keep, purgeBatch)
			return err
		})
		if err != nil || ended < purgeBatch {
			return err
		}
	}
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
	return changed
}

// checkNotLastAdmin refuses to take away the admin rights of name if no
// other enabled admin would remain.
func checkNotLastAdmin(txn *badger.Txn, name, verb string) error {
	admins, err := enabledAdmins(txn)
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
// states and last-use records. A user can own more tokens than one Badger
// transaction can delete, so it happens in two steps. The first
// transaction deletes the user record and writes the audit entry; once it
// commits, the user's tokens stop verifying and disappear from reads, and
// the name cannot be taken again until the second step, purgeUserTokens,
// has deleted the token keys in batches. If the process dies in between,
// the next open finishes the purge (see purgeOrphanTokens).
func (s *Badger) DeleteUser(ctx context.Context, name string) error {
	err := s.update(func(w *writeTxn) error {
		rec, err := getUser(w.txn, name)
		if err != nil {
			return err
		}
		if rec.Admin && !rec.Disabled {
			if err := checkNotLastAdmin(w.txn, name, "delete"); err != nil {
				return err
			}
		}
		n, err := countKeys(w.txn, userTokensPrefix(name))
		if err != nil {
			return err
		}
		if err := del(w.txn, userKey(name)); err != nil {
			return err
		}
		w.record(ctx, ActionUserDelete, name, fmt.Sprintf("%d tokens deleted", n))
		w.then(func() { s.markDeleted(name) })
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.purgeUserTokens(name); err != nil {
		return fmt.Errorf("storage: user %q is deleted and their tokens no longer work, but removing the tokens from disk failed; they are removed at the next start: %w", name, err)
	}
	return nil
}

// deleteUserTokens deletes up to limit of the user's tokens of one kind
// ("" = all), except the token with id keep, and returns how many.
func (s *Badger) deleteUserTokens(w *writeTxn, name string, kind TokenKind, keep string, limit int) (int, error) {
	var ids []string
	prefix := userTokensPrefix(name)
	err := scan(w.txn, prefix, false, func(key, _ []byte) error {
		ids = append(ids, string(key[len(prefix):]))
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		rec, found, err := getToken(w.txn, id)
		if err != nil {
			return 0, err
		}
		if !found || (kind != "" && rec.Kind != kind) || rec.ID == keep {
			continue
		}
		if err := s.deleteToken(w, rec); err != nil {
			return 0, err
		}
		if n++; n == limit {
			break
		}
	}
	return n, nil
}

// dummyBcrypt returns a hash at the store's cost, made once, that
// CheckPassword compares against for unknown users so they take as long as
// known ones (the same defence as caddyauth's basic_auth).
func (s *Badger) dummyBcrypt() []byte {
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
func (s *Badger) CheckPassword(_ context.Context, name, password string) (User, error) {
	var rec userRecord
	found := false
	err := s.view(func(txn *badger.Txn) error {
		var err error
		rec, err = getUser(txn, name)
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
