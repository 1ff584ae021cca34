package admin

import (
	"net/http"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

type createUserRequest struct {
	Username string `json:"username"`
	Email    string `json:"email"`
	Password string `json:"password"`
	Admin    bool   `json:"admin"`
}

// patchUserRequest has pointer fields so that "absent" and "zero" differ.
type patchUserRequest struct {
	Email    *string `json:"email"`
	Password *string `json:"password"`
	Admin    *bool   `json:"admin"`
	Disabled *bool   `json:"disabled"`
}

var errOnlyAdminOrSelf = newError(http.StatusForbidden, "only an administrator or the user themself may do this")

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
		Username: req.Username, Email: req.Email, Password: req.Password, Admin: req.Admin,
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
// own email and password; only an administrator may change anything else.
func (h *handler) patchUser(w http.ResponseWriter, r *http.Request, c caller) error {
	if !c.Admin && !c.isSelf(r) {
		return errOnlyAdminOrSelf
	}
	var req patchUserRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Email == nil && req.Password == nil && req.Admin == nil && req.Disabled == nil {
		return badRequest("nothing to change: send at least one of email, password, admin, disabled")
	}
	if !c.Admin && (req.Admin != nil || req.Disabled != nil) {
		return newError(http.StatusForbidden, "you may change only your own email and password; admin and disabled need an administrator")
	}
	patch := storage.UserPatch{Email: req.Email, Password: req.Password, Admin: req.Admin, Disabled: req.Disabled}
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
