package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/alerts"
	"github.com/apitokens/caddy-api-tokens/storage"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("api_tokens", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("api_token_auth", parseTokenAuth)
	httpcaddyfile.RegisterHandlerDirective("api_token_admin", parseAdminHandler)
	// Registered positions, so no global `order` is needed: api_token_auth
	// goes where basic_auth does, the admin API answers like respond.
	httpcaddyfile.RegisterDirectiveOrder("api_token_auth", httpcaddyfile.After, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("api_token_admin", httpcaddyfile.Before, "respond")
}

// parseGlobalOption sets up the api_tokens app from the global option:
//
//	api_tokens {
//		storage postgres {
//			dsn <dsn>
//		}
//		storage badger {
//			path <dir>
//		}
//		storage_path <dir>        # shorthand for storage badger { path <dir> }
//		max_staleness <duration>  # postgres only
//		session_ttl <duration>
//		max_sessions_per_user <n>
//		permanent_token_lifetime <duration>
//		bootstrap_admin <username> <password>
//		alert_interval <duration>
//		audit_retention <duration>
//		login_address_prefixes <ipv4 bits> <ipv6 bits>
//		scope <name> "<description>"   # once per scope: the catalogue
//		smtp {
//			host <host>
//			port <port>
//			username <username>
//			password <password>
//			encryption none|starttls|tls
//			from <address>
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the api_tokens global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "api_tokens", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the api_tokens global option (see
// parseGlobalOption for the syntax). Durations accept Caddy's forms,
// including days: 30d.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.Errf("api_tokens takes no arguments on its first line, got %q; put its options in a block", d.Val())
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && name != "scope" { // the catalogue is a scope line per scope
			return d.Errf("api_tokens: %s is given more than once", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "storage":
			err = a.unmarshalStorage(d)
		case "max_staleness":
			a.MaxStaleness, err = durationArg(d)
		case "storage_path":
			a.StoragePath, err = oneArg(d)
		case "session_ttl":
			a.SessionTTL, err = durationArg(d)
		case "max_sessions_per_user":
			a.MaxSessionsPerUser, err = intArg(d)
		case "permanent_token_lifetime":
			a.PermanentTokenLifetime, err = durationArg(d)
		case "alert_interval":
			a.AlertInterval, err = durationArg(d)
		case "audit_retention":
			a.AuditRetention, err = durationArg(d)
		case "bootstrap_admin":
			var args [2]string
			if !d.Args(&args[0], &args[1]) || d.NextArg() {
				return d.Errf("bootstrap_admin needs exactly two arguments: <username> <password>")
			}
			a.BootstrapAdmin = &BootstrapAdmin{Username: args[0], Password: args[1]}
		case "login_address_prefixes":
			a.LoginIPv4Prefix, a.LoginIPv6Prefix, err = prefixArgs(d)
		case "smtp":
			a.SMTP = new(SMTPConfig)
			err = a.SMTP.unmarshalCaddyfile(d)
		case "scope":
			var sc storage.Scope
			if !d.Args(&sc.Name) {
				return d.Errf(`scope needs a name and a description: scope <name> "<description>"`)
			}
			d.Args(&sc.Description)
			if d.NextArg() {
				return d.Errf(`scope takes a name and one description; quote a description of several words: scope %s "<description>"`, sc.Name)
			}
			a.Scopes = append(a.Scopes, sc)
		default:
			return d.Errf("api_tokens: unrecognized option %q (known: storage, storage_path, max_staleness, session_ttl, max_sessions_per_user, permanent_token_lifetime, bootstrap_admin, alert_interval, audit_retention, login_address_prefixes, scope, smtp)", name)
		}
		if err != nil {
			return err
		}
	}
	if a.StorageRaw != nil && a.StoragePath != "" {
		return d.Err("api_tokens: set storage or storage_path, not both (storage_path is short for storage badger { path <dir> })")
	}
	return nil
}

// unmarshalStorage reads `storage <kind> { ... }` into the JSON of the
// api_tokens.storage module named kind: badger, postgres, or another
// registered one.
func (a *App) unmarshalStorage(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("storage needs a kind: storage postgres { dsn ... } or storage badger { path ... }")
	}
	kind := d.Val()
	info, err := caddy.GetModule("api_tokens.storage." + kind)
	if err != nil {
		return d.Errf("storage: unknown kind %q (known: badger, postgres)", kind)
	}
	mod, ok := info.New().(caddyfile.Unmarshaler)
	if !ok {
		return d.Errf("storage %s has no Caddyfile syntax; configure it in JSON", kind)
	}
	if d.NextArg() {
		return d.Errf("storage %s takes its options in a block, got %q", kind, d.Val())
	}
	if err := mod.UnmarshalCaddyfile(d); err != nil {
		return err
	}
	a.StorageRaw = caddyconfig.JSONModuleObject(mod, "module", kind, nil)
	return nil
}

func (s *SMTPConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("smtp takes no arguments, got %q; put its options in a block", d.Val())
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("smtp: %s is given more than once", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "host":
			s.Host, err = oneArg(d)
		case "port":
			s.Port, err = portArg(d)
		case "username":
			s.Username, err = oneArg(d)
		case "password":
			s.Password, err = oneArg(d)
		case "from":
			s.From, err = oneArg(d)
		case "encryption":
			s.Encryption, err = oneArg(d)
			if _, known := alerts.DefaultSMTPPort(s.Encryption); err == nil && !known {
				return d.Errf("smtp: encryption must be none, starttls or tls, got %q", s.Encryption)
			}
		default:
			return d.Errf("smtp: unrecognized option %q (known: host, port, username, password, encryption, from)", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// parseTokenAuth sets up the api_token_auth directive:
//
//	api_token_auth [<matcher>] {
//		require_admin
//		require_scope <scope...>       # every listed scope is required
//		scope_mode enforce|shadow
//		keep_authorization
//		use_handle_errors
//	}
//
// It is the http.handlers.api_token_auth handler.
func parseTokenAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(AuthHandler)
	if err := a.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return a, nil
}

// UnmarshalCaddyfile reads the api_token_auth directive (see
// parseTokenAuth for the syntax).
func (a *AuthHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("api_token_auth takes no arguments, got %q; put require_admin, require_scope, scope_mode, keep_authorization or use_handle_errors in a block", d.Val())
	}
	for d.NextBlock(0) {
		name := d.Val()
		switch name {
		case "require_scope":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.Errf("require_scope needs at least one scope name")
			}
			a.RequireScope = append(a.RequireScope, scopes...)
			continue
		case "scope_mode":
			if !d.Args(&a.ScopeMode) || d.NextArg() {
				return d.Errf("scope_mode takes one argument: enforce or shadow")
			}
			continue
		case "require_admin":
			a.RequireAdmin = true
		case "keep_authorization":
			a.KeepAuthorization = true
		case "use_handle_errors":
			a.UseHandleErrors = true
		default:
			return d.Errf("api_token_auth: unrecognized option %q (known: require_admin, require_scope, scope_mode, keep_authorization, use_handle_errors)", name)
		}
		if d.NextArg() {
			return d.Errf("api_token_auth: %s takes no arguments, got %q", name, d.Val())
		}
	}
	return nil
}

// parseAdminHandler sets up the api_token_admin directive, which takes no
// arguments:
//
//	api_token_admin [<matcher>]
func parseAdminHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // the directive name
	if h.NextArg() {
		return nil, h.Errf("api_token_admin takes no arguments, got %q", h.Val())
	}
	if h.NextBlock(0) {
		return nil, h.Errf("api_token_admin takes no block; configure the app in the global api_tokens option (got %q)", h.Val())
	}
	return new(AdminHandler), nil
}

// oneArg reads exactly one argument for the current option.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	name := d.Val()
	if !d.NextArg() {
		return "", d.Errf("%s needs a value", name)
	}
	val := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s takes one value, got an extra %q", name, d.Val())
	}
	return val, nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	name := d.Val()
	val, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(val)
	if err != nil || n < 1 {
		return 0, d.Errf("%s must be a positive whole number, got %q", name, val)
	}
	return n, nil
}

// prefixArgs reads `login_address_prefixes <ipv4 bits> <ipv6 bits>`.
func prefixArgs(d *caddyfile.Dispenser) (v4, v6 int, err error) {
	var args [2]string
	if !d.Args(&args[0], &args[1]) || d.NextArg() {
		return 0, 0, d.Err("login_address_prefixes needs two prefix lengths: <ipv4 bits> <ipv6 bits>, such as 32 64")
	}
	v4, err4 := strconv.Atoi(args[0])
	v6, err6 := strconv.Atoi(args[1])
	if err4 != nil || err6 != nil || v4 < 1 || v4 > 32 || v6 < 1 || v6 > 128 {
		return 0, 0, d.Errf("login_address_prefixes: want 1-32 bits for IPv4 and 1-128 for IPv6, got %q %q", args[0], args[1])
	}
	return v4, v6, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	val, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	// The admin API's parser, so a duration means the same in the
	// Caddyfile and in a request (30d, 1d12h, 90m).
	dur, err := admin.ParseDuration(val)
	if err != nil && !strings.HasPrefix(val, "-") {
		return 0, d.Errf("%s: %q is not a duration like 90m, 12h or 30d", name, val)
	}
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s must be positive, got %q", name, val)
	}
	return caddy.Duration(dur), nil
}

func portArg(d *caddyfile.Dispenser) (int, error) {
	val, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(val)
	if err != nil || port < 1 || port > 65535 {
		return 0, d.Errf("smtp: port must be a number from 1 to 65535, got %q", val)
	}
	return port, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*AuthHandler)(nil)
)
