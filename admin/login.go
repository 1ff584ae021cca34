package admin

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
)

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type loginResponse struct {
	Token     string            `json:"token"`
	ID        string            `json:"id"`
	Kind      storage.TokenKind `json:"kind"`
	ExpiresAt time.Time         `json:"expires_at"`
	User      storage.User      `json:"user"`
}

var errBadLogin = newError(http.StatusUnauthorized, "invalid username or password")

// login trades a username and password for a temporary token. Failures are
// throttled per username and per client IP, and the throttle is checked
// before the password so a throttled guess costs no password hashing.
func (h *handler) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return badRequest("username and password are required")
	}
	ip := h.cfg.ClientIP(r)
	// A string that cannot be a username is counted against the IP only and
	// never stored: it may be anything, even a pasted password.
	username := ""
	if storage.ValidateUsername(req.Username) == nil {
		username = req.Username
	}
	if wait, ok := h.cfg.Throttle.begin(username, ip); !ok {
		return tooManyLogins(wait)
	}
	// Deferred, so a panic (recovered by ServeHTTP) still releases the
	// attempt. Only a wrong password counts as a failure: an unreachable
	// database is nobody's guess.
	outcome := attemptUndecided
	defer func() { h.cfg.Throttle.end(username, ip, outcome) }()
	user, err := h.checkPassword(r, username, req.Password, ip)
	switch {
	case err == errBadLogin:
		outcome = attemptFailed
	case err == nil:
		outcome = attemptSucceeded
	}
	if err != nil {
		return err
	}
	return h.startSession(w, r, user, ip)
}

// checkPassword returns the user if the password is right, errBadLogin (and
// an audit entry) if not.
func (h *handler) checkPassword(r *http.Request, username, password, ip string) (storage.User, error) {
	if username != "" {
		user, err := h.cfg.Store.CheckPassword(r.Context(), username, password)
		if err == nil {
			return user, nil
		}
		if !errors.Is(err, storage.ErrBadLogin) {
			return storage.User{}, err
		}
	}
	actor, detail := username, "wrong username or password, or disabled user"
	if username == "" {
		actor, detail = "-", "not a valid username"
	}
	entry := storage.AuditEntry{
		Time: h.cfg.Clock.Now(), Actor: actor, Action: storage.ActionLoginFailed,
		Target: username, Detail: detail, ClientIP: ip,
	}
	if err := h.cfg.Store.AppendAudit(r.Context(), entry); err != nil {
		// The login is refused either way; a lost audit entry is worth a log line.
		h.cfg.Logger.Error("recording failed login", zap.String("username", username), zap.Error(err))
	}
	return storage.User{}, errBadLogin
}

func (h *handler) startSession(w http.ResponseWriter, r *http.Request, user storage.User, ip string) error {
	ctx := storage.WithActor(r.Context(), user.Username, ip)
	secret, tok, err := h.cfg.Store.CreateToken(ctx, storage.NewToken{
		User:      user.Username,
		Kind:      storage.Temporary,
		ExpiresAt: h.cfg.Clock.Now().Add(h.cfg.SessionTTL),
		CreatedBy: user.Username,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, loginResponse{
		Token: secret, ID: tok.ID, Kind: tok.Kind, ExpiresAt: tok.ExpiresAt.UTC(), User: utcUser(user),
	})
	return nil
}

func tooManyLogins(wait time.Duration) *apiError {
	secs := int(math.Ceil(wait.Seconds()))
	e := newError(http.StatusTooManyRequests,
		fmt.Sprintf("too many failed logins for this user or address; try again in %d seconds", secs))
	e.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	return e
}

// logout ends the calling session by deleting its temporary token.
func (h *handler) logout(w http.ResponseWriter, r *http.Request, c caller) error {
	if c.Kind != storage.Temporary {
		return badRequest("logout ends a login session; a permanent token is deleted with DELETE /users/{username}/tokens/{id}")
	}
	if err := h.cfg.Store.Logout(c.ctx(r), c.TokenID); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}

func (h *handler) me(w http.ResponseWriter, r *http.Request, c caller) error {
	u, err := h.cfg.Store.GetUser(r.Context(), c.Username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, utcUser(u))
	return nil
}
