package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

type createUserRequest struct {
	Username string   `json:"username"`
	Email    string   `json:"email"`
	Password string   `json:"password"`
	Admin    bool     `json:"admin"`
	Scopes   []string `json:"scopes"`
}

// patchUserRequest has pointer fields so that "absent" and "zero" differ.
type patchUserRequest struct {
	Email    *string   `json:"email"`
	Password *string   `json:"password"`
	Admin    *bool     `json:"admin"`
	Disabled *bool     `json:"disabled"`
	Scopes   *[]string `json:"scopes"`
	// CurrentPassword proves, when users change their own password or
	// email, that they know the password and not only hold a token.
	CurrentPassword *string `json:"current_password"`
}

var (
	errOnlyAdminOrSelf = newError(http.StatusForbidden, "only an administrator or the user themself may do this")
	// A permanent token is a stored secret in some automation; if it leaks,
	// it must not be able to set a password that outlives its deletion.
	errPermanentCredentials = newError(http.StatusForbidden,
		"permanent tokens are for automation and cannot change a password or email; log in (POST /login) and use that session's token")
	errNeedCurrentPassword = badRequest(
		"to change your own password or email, also send your current password as current_password")
	errWrongCurrentPassword = newError(http.StatusForbidden,
		"current_password is not your current password; nothing was changed (wrong attempts count as failed logins)")
	errCurrentPasswordNotSelf = badRequest(
		"current_password is only for changing your own password or email; an administrator sets another user's without it")
	errCurrentPasswordAlone = badRequest(
		"current_password goes with a new password or email; send one of them too")
)

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request, _ caller) error {
	p, err := pageQuery(r)
	if err != nil {
		return err
	}
	users, next, err := h.cfg.Store.ListUsersPage(r.Context(), p.cursor, p.limit)
	if err != nil {
		return err
	}
	h.writePage(w, r, mapSlice(users, utcUser), next)
	return nil
}

func (h *handler) createUser(w http.ResponseWriter, r *http.Request, c caller) error {
	var req createUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return badRequest("username and password are required")
	}
	u, err := h.cfg.Store.CreateUser(c.ctx(r), storage.NewUser{
		Username: req.Username, Email: req.Email, Password: req.Password, Admin: req.Admin, Scopes: req.Scopes,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, utcUser(u))
	return nil
}

func (h *handler) getUser(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return errOnlyAdminOrSelf
	}
	u, err := h.cfg.Store.GetUser(r.Context(), r.PathValue("username"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, utcUser(u))
	return nil
}

// patchUser changes the fields present in the body. Users may change their
// own email and password, proving it with current_password; only an
// administrator may change anything else.
func (h *handler) patchUser(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return errOnlyAdminOrSelf
	}
	var req patchUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Email == nil && req.Password == nil && req.Admin == nil && req.Disabled == nil && req.Scopes == nil {
		return badRequest("nothing to change: send at least one of email, password, admin, disabled, scopes")
	}
	if !c.Admin && (req.Admin != nil || req.Disabled != nil || req.Scopes != nil) {
		return newError(http.StatusForbidden, "you may change only your own email and password; admin, disabled and scopes need an administrator")
	}
	if err := h.checkCredentialChange(r, c, req); err != nil {
		return err
	}
	patch := storage.UserPatch{Email: req.Email, Password: req.Password, Admin: req.Admin, Disabled: req.Disabled, Scopes: req.Scopes}
	if c.isSelf(r) && c.Kind == storage.Temporary {
		// A new password ends the user's other login sessions, not the
		// one that changed it.
		patch.KeepSession = c.TokenID
	}
	u, err := h.cfg.Store.UpdateUser(c.ctx(r), r.PathValue("username"), patch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, utcUser(u))
	return nil
}

// checkCredentialChange guards changes of a password or email: never with
// a permanent token, and for one's own account (administrators included)
// only with the current password, checked under the login throttle so it
// cannot be used to guess faster than logging in.
func (h *handler) checkCredentialChange(r *http.Request, c caller, req patchUserRequest) error {
	credentials := req.Email != nil || req.Password != nil
	current := req.CurrentPassword != nil && *req.CurrentPassword != ""
	switch {
	case req.CurrentPassword != nil && !credentials:
		return errCurrentPasswordAlone
	case !credentials:
		return nil
	case c.Kind == storage.Permanent:
		return errPermanentCredentials
	case !c.isSelf(r):
		if req.CurrentPassword != nil {
			return errCurrentPasswordNotSelf
		}
		return nil
	case !current:
		return errNeedCurrentPassword
	}
	a := c.actor()
	failure := storage.AuditEntry{
		Actor: a.Name, ActorTokenID: a.TokenID, ActorTokenKind: a.TokenKind, ClientIP: a.ClientIP,
		Action: storage.ActionLoginFailed, Target: c.Username, Detail: "wrong current_password when changing own password or email",
	}
	_, err := h.checkPassword(r, c.Username, *req.CurrentPassword, c.ip, failure)
	if wrong, ok := errors.AsType[*afterAnswer](err); ok && wrong.error == errBadLogin {
		wrong.error = errWrongCurrentPassword
	}
	return err
}

func (h *handler) deleteUser(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := h.cfg.Store.DeleteUser(c.ctx(r), r.PathValue("username")); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}

// The store returns times as it keeps them; the API promises UTC.

func utcUser(u storage.User) storage.User {
	u.CreatedAt = u.CreatedAt.UTC()
	return u
}

func utcToken(t storage.Token) storage.Token {
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt = t.ExpiresAt.UTC()
	t.LastUsedAt = utcPtr(t.LastUsedAt)
	t.RevokedAt = utcPtr(t.RevokedAt)
	return t
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func utcAudit(e storage.AuditEntry) storage.AuditEntry {
	e.Time = e.Time.UTC()
	return e
}

func utcFault(f storage.Fault) storage.Fault {
	f.ExpiresAt = f.ExpiresAt.UTC()
	f.RaisedAt = f.RaisedAt.UTC()
	return f
}

// mapSlice applies f to each element. It never returns nil, so an empty
// list is sent as [] rather than null.
func mapSlice[T any](in []T, f func(T) T) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// orEmpty returns s, or an empty slice for nil, so JSON says [] not null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
