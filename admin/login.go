package admin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
)

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	// Scopes asks for a session with fewer scopes than the user holds;
	// absent: all of them.
	Scopes *[]string `json:"scopes"`
}

type loginResponse struct {
	Token     string            `json:"token"`
	ID        string            `json:"id"`
	Kind      storage.TokenKind `json:"kind"`
	ExpiresAt time.Time         `json:"expires_at"`
	Scopes    []string          `json:"scopes"`
	User      storage.User      `json:"user"`
}

var errBadLogin = newError(http.StatusUnauthorized, "invalid username or password")

// login trades a username and password for a temporary token. Failures are
// throttled (see throttle.Throttle.Begin), and the throttle is checked before
// the password so a throttled guess costs no password hashing.
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
	failure := storage.AuditEntry{Actor: username, Action: storage.ActionLoginFailed, Target: username,
		Detail: "wrong password, or disabled user", ClientIP: ip}
	user, err := h.checkPassword(r, username, req.Password, ip, failure)
	if err != nil {
		return err
	}
	return h.startSession(w, r, user, ip, req.Scopes)
}

// checkPassword checks a password under the login throttle, for a login
// or for the current_password of a credential change: it returns the
// user if the password is right; 429 if the throttle refuses the attempt
// (before any hashing); errBadLogin if the password is wrong, as an
// *afterAnswer that records the failure once the client has its answer,
// so how long the answer takes never tells whether the user exists.
func (h *handler) checkPassword(r *http.Request, username, password, ip string, failure storage.AuditEntry) (storage.User, error) {
	attempt, wait, err := h.cfg.Store.Logins().Begin(r.Context(), username, ip, h.cfg.LoginThrottle)
	if err != nil {
		return storage.User{}, err
	}
	if wait > 0 {
		h.cfg.CountLoginRefusal(LoginThrottled)
		return storage.User{}, tooManyLogins(wait)
	}
	// Deferred, so a panic (recovered by ServeHTTP) still ends the
	// attempt. Only a wrong password stays a failure: an unreachable
	// database is nobody's guess.
	outcome := throttle.Unchecked
	defer func() { h.endLogin(r, attempt, outcome) }()
	user, err := h.passwordMatches(r, username, password)
	switch {
	case err == errBadLogin:
		outcome = throttle.Failed
		return storage.User{}, &afterAnswer{errBadLogin, func() { h.recordFailure(r, failure) }}
	case err == nil:
		outcome = throttle.Succeeded
	}
	return user, err
}

// recordFailure audits a wrong password of an existing user (one entry
// per user, address and throttle window, with a count) and counts every
// failure in api_tokens_login_refusals_total. Usernames that do not
// exist are only counted and logged, at most every unknownLogEvery: they
// cost no storage, whoever makes them up.
func (h *handler) recordFailure(r *http.Request, failure storage.AuditEntry) {
	ctx := context.WithoutCancel(r.Context())
	known, err := h.cfg.Store.RecordLoginFailure(ctx, failure, h.cfg.LoginThrottle.Window)
	if err != nil {
		// Refused either way; a lost audit entry is worth a log line.
		h.cfg.Logger.Error("recording a failed password check", zap.String("username", failure.Target), zap.Error(err))
	}
	if known || err != nil {
		h.cfg.CountLoginRefusal(LoginWrongPassword)
		return
	}
	h.cfg.CountLoginRefusal(LoginUnknownUser)
	h.unknownLogins.note(h.cfg.Logger, h.cfg.Clock.Now(), failure.ClientIP)
}

// passwordMatches returns the user if the password is right, errBadLogin
// if not (an empty username never is).
func (h *handler) passwordMatches(r *http.Request, username, password string) (storage.User, error) {
	if username == "" {
		return storage.User{}, errBadLogin
	}
	user, err := h.cfg.Store.CheckPassword(r.Context(), username, password)
	switch {
	case err == nil:
		return user, nil
	case errors.Is(err, storage.ErrBadLogin):
		return storage.User{}, errBadLogin
	}
	return storage.User{}, err
}

// endLogin tells the throttle how an attempt ended, even if the client
// has gone: a success must clear, and an unchecked attempt be taken back.
func (h *handler) endLogin(r *http.Request, a throttle.Attempt, outcome throttle.Outcome) {
	if err := h.cfg.Store.Logins().End(context.WithoutCancel(r.Context()), a, outcome); err != nil {
		h.cfg.Logger.Warn("recording the end of a login attempt in the throttle", zap.Error(err))
	}
}

func (h *handler) startSession(w http.ResponseWriter, r *http.Request, user storage.User, ip string, scopes *[]string) error {
	ctx := storage.WithActor(r.Context(), user.Username, ip)
	secret, tok, err := h.cfg.Store.CreateToken(ctx, storage.NewToken{
		User:        user.Username,
		Kind:        storage.Temporary,
		ExpiresAt:   h.cfg.Clock.Now().Add(h.cfg.SessionTTL),
		CreatedBy:   user.Username,
		MaxSessions: h.cfg.MaxSessionsPerUser,
		Scopes:      asked(scopes),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, loginResponse{
		Token: secret, ID: tok.ID, Kind: tok.Kind, ExpiresAt: tok.ExpiresAt.UTC(), Scopes: tok.Scopes, User: utcUser(user),
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
