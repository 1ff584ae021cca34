package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
)

func init() {
	caddy.RegisterModule(TokenAuth{})
}

// TokenAuth is an HTTP authentication provider that accepts API tokens
// issued by the api_tokens app, sent as `Authorization: Bearer <token>`
// (the scheme name is case-insensitive).
//
// A request without a valid token is answered 401 with a
// `WWW-Authenticate: Bearer realm="api_tokens"` challenge, which adds
// `error="invalid_token"` when a token was sent but is malformed, unknown,
// expired, revoked or belongs to a disabled user.
//
// After a successful authentication these placeholders are set:
//
//	{http.auth.user.id}          the username
//	{http.auth.user.token_id}    the token's non-secret ID
//	{http.auth.user.token_kind}  "permanent" or "temporary"
//	{http.auth.user.admin}       "true" or "false"
//
// By default the Authorization header is removed before the request goes
// on (for example to reverse_proxy), so upstreams never see the secret.
//
// Every decision is counted in api_tokens_auth_requests_total{result}.
type TokenAuth struct {
	// Only tokens of administrators pass; other valid tokens get 403.
	RequireAdmin bool `json:"require_admin,omitempty"`

	// Keep the Authorization header on the request after authentication
	// instead of removing it.
	KeepAuthorization bool `json:"keep_authorization,omitempty"`

	store tokenVerifier
	// results holds one resolved counter per storage.VerifyResult, so the
	// hot path increments without a label lookup or an allocation.
	results []prometheus.Counter
}

// CaddyModule returns the Caddy module information.
func (TokenAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.api_token",
		New: func() caddy.Module { return new(TokenAuth) },
	}
}

// Provision connects the provider to the api_tokens app's store and
// registers its metrics.
func (p *TokenAuth) Provision(ctx caddy.Context) error {
	app, err := getApp(ctx)
	if err != nil {
		return fmt.Errorf("api_token provider: %v", err)
	}
	counters, err := authCounters(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("api_token provider: registering metrics: %v", err)
	}
	p.store = app.Store()
	p.results = counters
	return nil
}

// tokenVerifier is what the provider needs from storage: the hot path's
// Verify, which reads the in-memory index (*storage.Store has it).
type tokenVerifier interface {
	Verify(secret string) (storage.Identity, storage.VerifyResult)
}

// The challenges of RFC 6750 section 3.
const (
	wwwAuthenticate       = "Www-Authenticate" // canonical form of WWW-Authenticate
	challengeNoToken      = `Bearer realm="api_tokens"`
	challengeInvalidToken = `Bearer realm="api_tokens", error="invalid_token"`
)

// forbiddenBody is the whole 403 response, in the admin API's error shape.
var forbiddenBody = []byte(`{"error":"this route requires an administrator's API token"}` + "\n")

// Authenticate validates the request's bearer token. It is on every
// request's path: it allocates nothing on success and never touches
// storage for a malformed token.
func (p *TokenAuth) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	// Indexed rather than Header.Get: the key is already canonical, and
	// Get would spend time on every request proving it.
	var header string
	if values := r.Header["Authorization"]; len(values) > 0 {
		header = values[0]
	}
	secret, ok := bearerToken(header)
	if !ok {
		p.count(storage.ResultMissing)
		// Header().Set allocates its one-element value slice. That is only
		// on the rejection path, and sharing a package-level slice instead
		// would let a `header` directive that edits values in place corrupt
		// every later response. The key is given in canonical form so Set
		// does not allocate a canonical copy of it too.
		w.Header().Set(wwwAuthenticate, challengeNoToken)
		return caddyauth.User{}, false, nil
	}
	id, result := p.store.Verify(secret)
	if result == storage.ResultUnavailable {
		p.count(result)
		writeUnavailable(w)
		return caddyauth.User{}, false, nil
	}
	if result != storage.ResultOK {
		p.count(result)
		w.Header().Set(wwwAuthenticate, challengeInvalidToken)
		return caddyauth.User{}, false, nil
	}
	if p.RequireAdmin && !id.Admin {
		p.count(storage.ResultForbidden)
		writeForbidden(w)
		// The user goes back as a candidate, so {http.auth.candidate.*}
		// tell the logs who was refused.
		return caddyauth.User{ID: id.Username, Metadata: id.Metadata}, false, nil
	}
	p.count(storage.ResultOK)
	if !p.KeepAuthorization {
		delete(r.Header, "Authorization")
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		setIdentityPlaceholders(repl, id)
	}
	// No Metadata: the placeholders it would give are set above.
	return caddyauth.User{ID: id.Username}, true, nil
}

// Boxed once: a string converted to `any` per request would allocate.
var (
	placeholderPermanent any = string(storage.Permanent)
	placeholderTemporary any = string(storage.Temporary)
	placeholderAdmin         = [2]any{"false", "true"}
)

// setIdentityPlaceholders sets {http.auth.user.token_id}, .token_kind and
// .admin. caddyauth would set them from the user's Metadata, but it builds
// each name by concatenation and boxes each value, six allocations per
// request; constant names and values boxed once cost none.
func setIdentityPlaceholders(repl *caddy.Replacer, id storage.Identity) {
	kind := placeholderTemporary
	if id.Kind == storage.Permanent {
		kind = placeholderPermanent
	}
	admin := placeholderAdmin[0]
	if id.Admin {
		admin = placeholderAdmin[1]
	}
	repl.Set("http.auth.user.token_id", id.TokenIDValue)
	repl.Set("http.auth.user.token_kind", kind)
	repl.Set("http.auth.user.admin", admin)
}

// writeForbidden answers 403 for a valid token that is not an admin's.
//
// Why the provider writes the response itself: caddyauth turns every
// unauthenticated result into a 401 error and offers no way to return 403.
// With a single provider (the api_token_auth directive's case) caddyauth
// hands us the real response writer, so the 403 status and body written
// here are what the client receives; Caddy's later attempt to write the
// 401 is a superfluous WriteHeader that net/http and Caddy's response
// recorder ignore, so the access log records 403 too. The alternatives were
// worse: returning an error makes caddyauth log it at ERROR and still
// answer 401, and a separate handler after authentication would split one
// decision across two modules. A site that also uses handle_errors should
// not write a body for this request: the response is already complete.
func writeForbidden(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(forbiddenBody)
}

// unavailableBody is the whole 503 response of a node that has not synced
// with a shared token database for longer than max_staleness.
var unavailableBody = []byte(`{"error":"this gateway has lost touch with the token database for too long to trust what it holds; try again shortly"}` + "\n")

// writeUnavailable answers 503 with Retry-After, the same way
// writeForbidden answers 403: caddyauth's 401 that follows is ignored.
func writeUnavailable(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(unavailableBody)
}

// bearerToken extracts the token from an Authorization header value of
// the form "Bearer <token>", the scheme compared case-insensitively
// (RFC 7235). It reports false when there is no bearer token at all.
func bearerToken(header string) (string, bool) {
	const scheme = "Bearer "
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.Trim(header[len(scheme):], " \t")
	return token, token != ""
}

func (p *TokenAuth) count(r storage.VerifyResult) {
	if int(r) < len(p.results) {
		p.results[r].Inc()
	}
}

// authRequests counts authentication decisions. It is created once per
// process so its values survive config reloads; each config generation
// has a fresh metrics registry and registers it again.
var authRequests = sync.OnceValue(func() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "api_tokens_auth_requests_total",
		Help: "Bearer token authentication decisions of the api_token provider, by result.",
	}, []string{"result"})
})

// authCounters registers the auth counter on reg and returns one resolved
// counter per verification result, indexed by storage.VerifyResult. Every
// series exists from the start, so a rate() over `forbidden` works before
// the first refusal.
func authCounters(reg *prometheus.Registry) ([]prometheus.Counter, error) {
	vec := authRequests()
	// Several api_token_auth directives in one config share a registry, so
	// the second registration fails as already registered: like
	// reverseproxy's metrics, reuse the collector that is there.
	if err := reg.Register(vec); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return nil, err
		}
		existing, ok := already.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("a different collector is registered as api_tokens_auth_requests_total: %v", err)
		}
		vec = existing
	}
	all := storage.AllVerifyResults()
	counters := make([]prometheus.Counter, len(all))
	for _, r := range all {
		counters[r] = vec.WithLabelValues(r.String())
	}
	return counters, nil
}

// Interface guards
var (
	_ caddy.Provisioner       = (*TokenAuth)(nil)
	_ caddyauth.Authenticator = (*TokenAuth)(nil)
)
