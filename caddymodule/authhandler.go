package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(AuthHandler{})
}

// AuthHandler lets a request through only with a valid API token issued
// by the api_tokens app, sent as `Authorization: Bearer <token>` (the
// scheme name is case-insensitive). It is the api_token_auth directive.
//
// A request without a valid token is answered at once, with a small JSON
// body `{"error": "…"}`:
//
//   - 401 with `WWW-Authenticate: Bearer realm="api_tokens"` when it has no
//     bearer token (no Authorization header, another scheme, an empty token);
//   - 401 with `WWW-Authenticate: Bearer realm="api_tokens", error="invalid_token"`
//     when the token is malformed, unknown, expired, revoked or belongs to a
//     disabled user, and when the request has more than one Authorization
//     header;
//   - 403 with `error="insufficient_scope"` when require_admin is set and
//     the token is not an administrator's, or when it lacks a scope that
//     require_scope lists (the challenge and the body then name them);
//   - 403 `{"error":"network_not_allowed"}` when the client address
//     (Caddy's, which honours trusted_proxies) is outside the token's
//     allowed networks.
//
// Such an answer is not a Caddy error: the site's error routes
// (handle_errors) do not run and nothing is logged as an error, which keeps
// a flood of bad tokens cheap. Set use_handle_errors to have refusals
// handled as errors instead.
//
// After a successful authentication these placeholders are set, and
// Caddy's access log shows the username as user_id:
//
//	{http.auth.user.id}          the username
//	{http.auth.user.token_id}    the token's non-secret ID
//	{http.auth.user.token_kind}  "permanent" or "temporary"
//	{http.auth.user.admin}       "true" or "false"
//	{http.auth.user.scopes}      the effective scopes, sorted, space-separated
//
// After a 403 the same values are in {http.auth.candidate.*}. By default
// the Authorization header is removed before the request goes on (for
// example to reverse_proxy), so upstreams never see the secret.
//
// Every decision is counted in api_tokens_auth_requests_total{result}.
//
// To combine API tokens with other credentials (basic_auth's users, say)
// on one route, use the http.authentication.providers.api_token provider
// inside Caddy's authentication handler instead.
type AuthHandler struct {
	// Only tokens of administrators pass; other valid tokens get 403.
	RequireAdmin bool `json:"require_admin,omitempty"`

	RouteScopes

	// Keep the Authorization header on the request after authentication
	// instead of removing it.
	KeepAuthorization bool `json:"keep_authorization,omitempty"`

	// Refuse by returning a Caddy error (status 401 or 403, and the
	// message as {err.message}) instead of answering directly, so the
	// site's error routes (handle_errors) write the answer. The
	// WWW-Authenticate challenge is set either way. It costs every refusal
	// Caddy's error handling: the error value with its caller trace, the
	// error log entry (at DEBUG level, but encoded whenever that level is
	// on) and the error routes themselves.
	UseHandleErrors bool `json:"use_handle_errors,omitempty"`

	gate *gate
}

// CaddyModule returns the Caddy module information.
func (AuthHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_token_auth",
		New: func() caddy.Module { return new(AuthHandler) },
	}
}

// Provision connects the handler to the api_tokens app's store and
// registers its metrics.
func (h *AuthHandler) Provision(ctx caddy.Context) error {
	app, err := getApp(ctx)
	if err != nil {
		return fmt.Errorf("api_token_auth: %v", err)
	}
	counts, err := authCounters(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("api_token_auth: registering metrics: %v", err)
	}
	h.gate, err = gateOf(app, h.RequireAdmin, h.RouteScopes, counts, ctx.Logger())
	if err != nil {
		return fmt.Errorf("api_token_auth: %v", err)
	}
	return nil
}

// ServeHTTP passes the request to next if it carries a valid token, and
// refuses it otherwise. It is on every request's path: it allocates
// nothing, on success or refusal, and never touches storage for a
// malformed token.
func (h *AuthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Indexed rather than Header.Get: the key is canonical already, and
	// Parse must see every value to refuse a second header.
	id, rf := h.gate.verify(r)
	// Caddy's server always puts a replacer in the context.
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if rf != nil {
		if rf.result.RefusedByRoute() && repl != nil {
			giveIdentity(r, repl, id, true, h.gate.verifier)
		}
		return h.refuse(w, rf)
	}
	if !h.KeepAuthorization {
		delete(r.Header, headerAuthorization)
	}
	if repl != nil {
		giveIdentity(r, repl, id, false, h.gate.verifier)
	}
	return next.ServeHTTP(w, r)
}

// refuse answers a counted refusal: directly, or as a Caddy error for the
// error routes with use_handle_errors.
func (h *AuthHandler) refuse(w http.ResponseWriter, rf *refusal) error {
	if h.UseHandleErrors {
		setChallenge(w.Header(), rf)
		return caddyhttp.Error(rf.status, rf.err)
	}
	writeRefusal(w, rf)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*AuthHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AuthHandler)(nil)
)
