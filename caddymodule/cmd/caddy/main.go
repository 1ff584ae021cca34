// Command caddy is Caddy's standard distribution with the API tokens plugin
// compiled in. Tests and the load benchmark build it with `go build`; users
// build the same thing with `./xcaddy.sh build`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the official distribution.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// This plugin: the api_tokens app, the api_token auth provider, the
	// api_token_admin handler and their Caddyfile directives.
	_ "github.com/apitokens/caddy-api-tokens/caddymodule"
)

func main() {
	caddycmd.Main()
}
