// Package admin is the admin REST API of API tokens for Caddy: logins,
// users, tokens, settings, faults and the audit log, as a plain
// net/http.Handler over a *storage.Store. It has no Caddy dependency; the
// caddymodule package mounts it.
package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/internal/bearer"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Store is what the admin API needs from storage; *storage.Store has it.
type Store interface {
	Verifier() *verifier.Verifier
	CheckPassword(ctx context.Context, username, password string) (storage.User, error)
	Logins() *throttle.Throttle

	CreateUser(ctx context.Context, u storage.NewUser) (storage.User, error)
	GetUser(ctx context.Context, username string) (storage.User, error)
	ListUsersPage(ctx context.Context, cursor string, limit int) (users []storage.User, next string, err error)
	UpdateUser(ctx context.Context, username string, p storage.UserPatch) (storage.User, error)
	DeleteUser(ctx context.Context, username string) error

	CreateToken(ctx context.Context, t storage.NewToken) (secret string, meta storage.Token, err error)
	ListUserTokensPage(ctx context.Context, username, cursor string, limit int) (tokens []storage.Token, next string, err error)
	GetUserToken(ctx context.Context, username, id string) (storage.Token, error)
	ListTokensPage(ctx context.Context, f storage.TokenFilter, cursor string, limit int) (tokens []storage.Token, next string, err error)
	DeleteToken(ctx context.Context, username, id string) error
	Logout(ctx context.Context, id string) error
	RotateToken(ctx context.Context, username, id string, grace time.Duration, expiresAt time.Time) (secret string, meta storage.Token, err error)
	UpdateToken(ctx context.Context, username, id string, p storage.TokenPatch) (storage.Token, error)
	Scopes() []storage.Scope

	ListSettings(ctx context.Context) ([]storage.Setting, error)
	GetSetting(ctx context.Context, key string) (string, error)
	PutSetting(ctx context.Context, key, value string) (storage.Setting, error)
	DeleteSetting(ctx context.Context, key string) error

	AppendAudit(ctx context.Context, e storage.AuditEntry) error
	RecordLoginFailure(ctx context.Context, e storage.AuditEntry, window time.Duration) (known bool, err error)
	ListAuditPage(ctx context.Context, cursor string, limit int) (entries []storage.AuditEntry, next string, err error)

	CanBackup() bool
	Backup(ctx context.Context, w io.Writer) error
}

// Config is what New needs. Zero values get the documented defaults; only
// Store is required.
type Config struct {
	Store Store
	// Clock defaults to storage.SystemClock.
	Clock storage.Clock
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// SessionTTL is how long a login's temporary token lives. Default 12h.
	SessionTTL time.Duration
	// PermanentTokenLifetime is the default and the maximum lifetime of a
	// permanent token. Default 365 days.
	PermanentTokenLifetime time.Duration
	// MaxSessionsPerUser caps a user's login sessions: a login beyond it
	// ends the oldest. Default 50.
	MaxSessionsPerUser int
	// LoginThrottle limits failed logins. Zero fields get
	// throttle.DefaultPolicy's.
	LoginThrottle throttle.Policy
	// CountLoginRefusal, if set, is called for every refused password
	// check with why: LoginUnknownUser, LoginWrongPassword or
	// LoginThrottled.
	CountLoginRefusal func(reason string)
	// Faults returns the active faults for GET /faults; nil lists none.
	Faults func() []storage.Fault
	// ClientIP tells the caller's address for throttling and audit. Default:
	// the host of r.RemoteAddr (behind a proxy, pass one that knows better).
	ClientIP func(*http.Request) string
	// UI, if set, is served at GET /ui/ with the request path unchanged.
	UI http.Handler
	// RequestPath returns the path of the request as the client sent it,
	// escaped (url.URL.EscapedPath), before any prefix was stripped: the
	// links to the next page of a list start with it. Default: the path
	// of the request line (r.RequestURI), which http.StripPrefix keeps;
	// behind a proxy that rewrites the request line, pass one that knows
	// the original.
	RequestPath func(*http.Request) string
}

// Defaults for Config's zero values.
const (
	DefaultSessionTTL             = 12 * time.Hour
	DefaultPermanentTokenLifetime = 365 * 24 * time.Hour
	DefaultMaxSessionsPerUser     = 50
	// maxRotateGrace bounds how long a rotated token keeps working.
	maxRotateGrace = 7 * 24 * time.Hour
)

type handler struct {
	cfg           Config
	unknownLogins unknownLoginLog
	mux           *http.ServeMux
	// patterns lists the API's routes, which openapi.json must document.
	patterns []string
}

// New returns the admin API handler. Paths are relative to where it is
// mounted: /login, /users, ...
func New(cfg Config) http.Handler {
	h := &handler{cfg: withDefaults(cfg), mux: http.NewServeMux()}
	h.routes()
	return h
}

func withDefaults(cfg Config) Config {
	if cfg.Clock == nil {
		cfg.Clock = storage.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	cfg.LoginThrottle = cfg.LoginThrottle.WithDefaults()
	if cfg.CountLoginRefusal == nil {
		cfg.CountLoginRefusal = func(string) {}
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	if cfg.PermanentTokenLifetime <= 0 {
		cfg.PermanentTokenLifetime = DefaultPermanentTokenLifetime
	}
	if cfg.Faults == nil {
		cfg.Faults = func() []storage.Fault { return nil }
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = remoteHost
	}
	if cfg.RequestPath == nil {
		cfg.RequestPath = requestPath
	}
	return cfg
}

func (h *handler) routes() {
	h.handle("GET /openapi.json", serveOpenAPI)
	h.handle("POST /login", h.public(h.login))
	h.handle("POST /logout", h.authed(h.logout))
	h.handle("GET /me", h.authed(h.me))

	h.handle("GET /users", h.admin(h.listUsers))
	h.handle("POST /users", h.admin(h.createUser))
	h.handle("GET /users/{username}", h.authed(h.getUser))
	h.handle("PATCH /users/{username}", h.authed(h.patchUser))
	h.handle("DELETE /users/{username}", h.admin(h.deleteUser))

	h.handle("GET /users/{username}/tokens", h.authed(h.listUserTokens))
	h.handle("POST /users/{username}/tokens", h.admin(h.createToken))
	h.handle("GET /users/{username}/tokens/{id}", h.authed(h.getToken))
	h.handle("DELETE /users/{username}/tokens/{id}", h.authed(h.deleteToken))
	h.handle("PATCH /users/{username}/tokens/{id}", h.admin(h.patchToken))
	h.handle("POST /users/{username}/tokens/{id}/rotate", h.admin(h.rotateToken))
	h.handle("GET /scopes", h.authed(h.listScopes))
	h.handle("GET /tokens", h.admin(h.listTokens))

	h.handle("GET /settings", h.admin(h.listSettings))
	h.handle("GET /settings/{key}", h.admin(h.getSetting))
	h.handle("PUT /settings/{key}", h.admin(h.putSetting))
	h.handle("DELETE /settings/{key}", h.admin(h.deleteSetting))

	h.handle("GET /faults", h.admin(h.listFaults))
	h.handle("GET /audit", h.admin(h.listAudit))
	h.handle("GET /backup", h.admin(h.backup))

	// The web page is not part of the API (nor of openapi.json).
	if h.cfg.UI != nil {
		h.mux.Handle("GET /ui/", h.cfg.UI)
		h.mux.HandleFunc("GET /ui", redirectToUI)
	}
}

// handle registers one route of the API.
func (h *handler) handle(pattern string, fn http.HandlerFunc) {
	h.mux.HandleFunc(pattern, fn)
	h.patterns = append(h.patterns, pattern)
}

// redirectToUI sends /ui to /ui/ with a relative Location, so the redirect
// stays under whatever path prefix Caddy stripped (http.Redirect would make
// it absolute and drop the prefix).
func redirectToUI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Location", "ui/")
	w.WriteHeader(http.StatusMovedPermanently)
}

// ServeHTTP adds the security headers every answer carries, turns the mux's
// own plain-text 404 and 405 into JSON, and keeps a panic from reaching the
// client as a dropped connection.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	defer h.recoverPanic(w, r)
	if crossSite(r) {
		h.writeError(w, r, "-", errCrossSite)
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		w = &muxErrorWriter{ResponseWriter: w}
	}
	h.mux.ServeHTTP(w, r)
}

// crossSite tells a request with side effects that a browser made for a
// page of another site (Sec-Fetch-Site: cross-site or same-site). Nothing
// of this API is meant for such pages: it answers no CORS preflight, so
// they could only send requests whose answer they cannot read, for their
// side effects, such as counting failed logins against their visitor's
// address. A GET stays open (a link to the web page from elsewhere), as
// does every client that is not a browser: they send no Sec-Fetch-Site.
func crossSite(r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return true
	}
	return false
}

var errCrossSite = newError(http.StatusForbidden, "this API does not answer pages of other sites (Sec-Fetch-Site)")

func (h *handler) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	h.cfg.Logger.Error("admin API handler panicked",
		zap.String("method", r.Method), zap.String("path", r.URL.Path),
		zap.Any("panic", v), zap.Stack("stack"))
	writeJSON(w, http.StatusInternalServerError, errorBody{"internal error"})
}

// muxErrorWriter rewrites the ServeMux's plain-text "404 page not found" and
// "405 method not allowed" as JSON errors, keeping the Allow header.
type muxErrorWriter struct {
	http.ResponseWriter
	swallow bool
}

func (m *muxErrorWriter) WriteHeader(status int) {
	var msg string
	switch status {
	case http.StatusNotFound:
		msg = "no such endpoint"
	case http.StatusMethodNotAllowed:
		msg = "method not allowed; allowed: " + m.Header().Get("Allow")
	default:
		m.ResponseWriter.WriteHeader(status)
		return
	}
	m.swallow = true
	m.Header().Del("Content-Length")
	writeJSON(m.ResponseWriter, status, errorBody{msg})
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.swallow {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

// A handler func returns an error instead of writing it, so errors are
// mapped in one place (writeError).
type (
	publicFunc func(w http.ResponseWriter, r *http.Request) error
	authedFunc func(w http.ResponseWriter, r *http.Request, c caller) error
)

// caller is an authenticated request's who-and-from-where.
type caller struct {
	verifier.Identity
	ip string
}

// ctx returns the request context carrying the caller, with the token it
// used, for the store's audit.
func (c caller) ctx(r *http.Request) context.Context {
	return storage.WithCaller(r.Context(), c.actor())
}

func (c caller) actor() storage.Actor {
	return storage.Actor{Name: c.Username, ClientIP: c.ip, TokenID: c.TokenID, TokenKind: c.Kind}
}

// isSelf reports whether the {username} in the path is the caller.
func (c caller) isSelf(r *http.Request) bool {
	return r.PathValue("username") == c.Username
}

func (h *handler) public(fn publicFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.writeError(w, r, "", err)
		}
	}
}

func (h *handler) authed(fn authedFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.authenticate(r)
		if err == nil {
			err = fn(w, r, c)
		}
		if err != nil {
			h.writeError(w, r, c.Username, err)
		}
	}
}

func (h *handler) admin(fn authedFunc) http.HandlerFunc {
	return h.authed(func(w http.ResponseWriter, r *http.Request, c caller) error {
		if !c.Admin {
			return errForbiddenAdmin
		}
		return fn(w, r, c)
	})
}

// authenticate checks the bearer token, read by the same parser as the
// gateway's, so a header gets the same answer here as there. The token's
// own value is never logged or echoed.
func (h *handler) authenticate(r *http.Request) (caller, error) {
	secret, found := bearer.Parse(r.Header["Authorization"])
	switch found {
	case bearer.Missing:
		return caller{}, unauthorized(bearer.ChallengeNoToken, bearer.Message(verifier.ResultMissing))
	case bearer.Multiple:
		return caller{}, unauthorized(bearer.ChallengeInvalidToken, bearer.MessageMultiple)
	}
	ip := h.cfg.ClientIP(r)
	client, _ := netip.ParseAddr(ip) // not an address: in no allowed network
	id, res := h.cfg.Store.Verifier().VerifyFrom(secret, nil, client)
	switch res {
	case verifier.ResultOK:
		return caller{Identity: id, ip: ip}, nil
	case verifier.ResultUnavailable:
		e := newError(http.StatusServiceUnavailable, bearer.Message(res))
		e.header = http.Header{"Retry-After": {bearer.RetryAfter}}
		return caller{}, e
	case verifier.ResultNetworkNotAllowed:
		return caller{}, newError(http.StatusForbidden, bearer.Message(res))
	}
	return caller{}, unauthorized(bearer.Challenge(res), bearer.Message(res))
}

func unauthorized(challenge, msg string) *apiError {
	e := newError(http.StatusUnauthorized, msg)
	e.header = http.Header{"Www-Authenticate": {challenge}}
	return e
}

// writeError answers err as {"error": "..."}. Errors that are not the
// client's doing are logged with context and answered with a generic 500;
// an unreachable database is logged too and answered 503.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, actor string, err error) {
	if after, ok := errors.AsType[*afterAnswer](err); ok {
		h.writeError(w, r, actor, after.error)
		// The client has its whole answer (it has a Content-Length)
		// before the work after it starts.
		_ = http.NewResponseController(w).Flush()
		after.then()
		return
	}
	ae := clientError(err)
	if ae != nil && ae.status == http.StatusServiceUnavailable && errors.Is(err, storage.ErrUnavailable) {
		h.cfg.Logger.Warn("admin API request failed: the token database is unavailable",
			zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("actor", actor), zap.Error(err))
	}
	if ae == nil {
		h.cfg.Logger.Error("admin API request failed",
			zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.String("actor", actor), zap.Error(err))
		ae = newError(http.StatusInternalServerError, "internal error")
	}
	for k, v := range ae.header {
		w.Header()[k] = v
	}
	writeJSON(w, ae.status, errorBody{ae.msg})
}

// remoteHost is the default ClientIP: the address the connection comes from.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
