// Package caddymodule plugs API tokens into Caddy: the api_tokens app that
// owns the token database, the http.handlers.api_token_auth handler that
// checks bearer tokens on every request, the
// http.authentication.providers.api_token provider that does the same
// inside Caddy's authentication handler, the http.handlers.api_token_admin
// handler that serves the admin REST API, and their Caddyfile syntax. It is an adapter only: the rules live in the
// storage, admin and alerts packages.
package caddymodule
