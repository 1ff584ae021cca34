// Command caddy is the Caddy that bench/load.sh measures: Caddy's standard
// distribution with the API tokens plugin, as caddymodule/cmd/caddy, plus
// one benchmark-only handler, bench_pass, which never ships.
//
// bench_pass does nothing but call the next handler. A site with it in
// front of `respond` measures what any handler costs a request in a Caddy
// route (Caddy builds each route's handler chain per request), so the
// load test can tell that floor apart from what api_token_auth adds to it.
package main

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apitokens/caddy-api-tokens/caddymodule"
)

func init() {
	caddy.RegisterModule(Pass{})
	httpcaddyfile.RegisterHandlerDirective("bench_pass", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next() // the directive's name; it takes no arguments
		if h.NextArg() {
			return nil, h.ArgErr()
		}
		return Pass{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("bench_pass", httpcaddyfile.Before, "respond")
}

// Pass is the bench_pass handler: it calls the next handler and nothing else.
type Pass struct{}

// CaddyModule returns the Caddy module information.
func (Pass) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.bench_pass", New: func() caddy.Module { return new(Pass) }}
}

// ServeHTTP calls next.
func (Pass) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

func main() {
	caddycmd.Main()
}

// Interface guards
var _ caddyhttp.MiddlewareHandler = Pass{}
