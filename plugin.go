// Package caddyapitokens is what xcaddy imports to build Caddy with API
// tokens (`xcaddy build --with github.com/apitokens/caddy-api-tokens`):
// importing it registers the Caddy modules, which live in ./caddymodule.
package caddyapitokens

import _ "github.com/apitokens/caddy-api-tokens/caddymodule"
