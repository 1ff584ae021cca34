package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/admin/ui"
)

func init() {
	caddy.RegisterModule(AdminHandler{})
}

// AdminHandler serves the API tokens admin REST API: log in, manage users
// and their tokens, settings, faults and the audit log. It answers every
// request it gets, with paths relative to where it is mounted, so mount it
// under a prefix that is stripped, for example:
//
//	handle_path /api-tokens/* {
//		api_token_admin
//	}
//
// Callers authenticate with their own bearer tokens (POST /login needs
// none); it does not need api_token_auth in front of it.
type AdminHandler struct {
	api http.Handler
	app *App
}

// CaddyModule returns the Caddy module information.
func (AdminHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.api_token_admin",
		New: func() caddy.Module { return new(AdminHandler) },
	}
}

// Provision builds the admin API over the api_tokens app's shared state.
func (h *AdminHandler) Provision(ctx caddy.Context) error {
	app, err := getApp(ctx)
	if err != nil {
		return fmt.Errorf("api_token_admin: %v", err)
	}
	return h.provisionWith(ctx, app)
}

// provisionWith builds the admin API over app's shared state.
func (h *AdminHandler) provisionWith(ctx caddy.Context, app *App) error {
	h.app = app
	if err := registerCollector(ctx.GetMetricsRegistry(), loginRefusalCollector{}); err != nil {
		return fmt.Errorf("api_token_admin: registering login metrics: %v", err)
	}
	h.api = admin.New(admin.Config{
		Store:                  app.Store(),
		Clock:                  app.Clock(),
		Logger:                 ctx.Logger(),
		SessionTTL:             time.Duration(app.SessionTTL),
		PermanentTokenLifetime: time.Duration(app.PermanentTokenLifetime),
		LoginThrottle:          app.loginThrottle(),
		MaxSessionsPerUser:     app.MaxSessionsPerUser,
		CountLoginRefusal:      countLoginRefusal,
		Faults:                 app.shared.alerts.Faults,
		ClientIP:               clientIP,
		RequestPath:            originalPath,
		UI:                     ui.Handler(),
	})
	return nil
}

// ServeHTTP answers the request; it never calls next.
func (h *AdminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if refusePathTricks(w, r) {
		return nil
	}
	// A request can arrive before the api_tokens app's Start has created the
	// first admin (Caddy starts apps in no fixed order); create it now, so a
	// login right after start-up never fails for that reason.
	if err := h.app.bootstrap(); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	h.api.ServeHTTP(w, r)
	return nil
}

// clientIP is the address Caddy determined for the client, which honors
// the server's trusted_proxies setting, so the login throttle and the
// audit log see the real client behind a trusted load balancer.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// originalPath is the path the client asked for, before handle_path (or
// any rewrite) stripped the prefix the admin API is mounted under, so that
// the links to a list's next page lead back here.
func originalPath(r *http.Request) string {
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.URL != nil {
		return or.URL.EscapedPath()
	}
	return r.URL.EscapedPath()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*AdminHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*AdminHandler)(nil)
)
