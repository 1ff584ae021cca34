package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"

	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func init() {
	caddy.RegisterModule(TokenAuth{})
}

// TokenAuth is an HTTP authentication provider for Caddy's authentication
// handler that accepts API tokens issued by the api_tokens app, sent as
// `Authorization: Bearer <token>` (the scheme name is case-insensitive).
//
// Use it to accept API tokens alongside other providers on one route, for
// example http_basic's users. For API tokens alone, the api_token_auth
// handler (http.handlers.api_token_auth) does the same job for less: every
// refusal here goes through Caddy's error handling, because that is how
// the authentication handler refuses.
//
// A request without a valid token gets a
// `WWW-Authenticate: Bearer realm="api_tokens"` challenge, which adds
// `error="invalid_token"` when a token was sent but is malformed, unknown,
// expired, revoked or belongs to a disabled user, or when the request has
// more than one Authorization header; the authentication handler then
// answers 401.
//
// After a successful authentication these placeholders are set:
//
//	{http.auth.user.id}          the username
//	{http.auth.user.token_id}    the token's non-secret ID
//	{http.auth.user.token_kind}  "permanent" or "temporary"
//	{http.auth.user.admin}       "true" or "false"
//	{http.auth.user.scopes}      the effective scopes, sorted, space-separated
//
// A valid token refused for what the route or the request asks
// (require_admin, require_scope, allowed networks) is answered 403 here,
// as api_token_auth answers it (see Authenticate).
//
// By default the Authorization header is removed before the request goes
// on (for example to reverse_proxy), so upstreams never see the secret.
//
// Every decision is counted in api_tokens_auth_requests_total{result}.
type TokenAuth struct {
	// Only tokens of administrators pass; other valid tokens get 403 when
	// this is the handler's only provider (see Authenticate).
	RequireAdmin bool `json:"require_admin,omitempty"`

	RouteScopes

	// Keep the Authorization header on the request after authentication
	// instead of removing it.
	KeepAuthorization bool `json:"keep_authorization,omitempty"`

	gate *gate
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
	counts, err := authCounters(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("api_token provider: registering metrics: %v", err)
	}
	p.gate, err = gateOf(app, p.RequireAdmin, p.RouteScopes, counts, ctx.Logger())
	if err != nil {
		return fmt.Errorf("api_token provider: %v", err)
	}
	return nil
}

// Authenticate validates the request's bearer token. It reads the header
// with the same parser as api_token_auth and the admin API, never touches
// storage for a malformed token, and allocates nothing itself
// (caddyauth's {http.auth.user.id} after it does).
//
// A valid token that require_admin, require_scope or its allowed networks
// refuse is answered 403 here: caddyauth
// can only refuse with 401 and offers no way to return 403. With a single
// provider caddyauth hands us the real response writer, so the 403 status
// and body written here are what the client receives; caddyauth's 401
// error that follows is a superfluous WriteHeader that net/http and
// Caddy's response recorder ignore, so the access log records 403 too, but
// the site's error routes still run, with {err.status_code} 401. With
// several providers caddyauth buffers each one's answer and the client
// gets its 401. The api_token_auth handler has neither problem.
func (p *TokenAuth) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	id, rf := p.gate.verify(r)
	switch {
	case rf == nil:
	case rf.result == verifier.ResultUnavailable:
		// Like the 403s below: caddyauth could only answer 401, which
		// would tell the client its token is bad.
		writeRefusal(w, rf)
		return caddyauth.User{}, false, nil
	case rf.result.RefusedByRoute():
		writeRefusal(w, rf)
		// The user goes back as a candidate, so {http.auth.candidate.*}
		// tell the logs who was refused.
		return caddyauth.User{ID: id.Username, Metadata: identities.of(id, p.gate.verifier).candidateMetadata()}, false, nil
	default:
		setChallenge(w.Header(), rf)
		return caddyauth.User{}, false, nil
	}
	if !p.KeepAuthorization {
		delete(r.Header, headerAuthorization)
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		// caddyauth would set the token placeholders from the user's
		// Metadata at six allocations per request; set here they cost none.
		giveIdentity(r, repl, id, false, p.gate.verifier)
	}
	// No Metadata: the placeholders it would give are set above.
	return caddyauth.User{ID: id.Username}, true, nil
}

// Interface guards
var (
	_ caddy.Provisioner       = (*TokenAuth)(nil)
	_ caddyauth.Authenticator = (*TokenAuth)(nil)
)
