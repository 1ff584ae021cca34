package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/alerts"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults and limits of the api_tokens app.
const (
	defaultSessionTTL             = 12 * time.Hour
	maxSessionsPerUser            = 10000 // a login reads them all
	maxTokenLifetime              = 365 * 24 * time.Hour
	defaultPermanentTokenLifetime = maxTokenLifetime
	defaultAlertInterval          = time.Hour
	minAlertInterval              = time.Second
	minAuditRetention             = 24 * time.Hour
	maxAuditRetention             = 100 * 365 * 24 * time.Hour
	auditPruneInterval            = time.Hour

	// generatedAdmin is the admin created when bootstrap_admin is not set
	// and the store has no admin yet.
	generatedAdmin = "admin"
)

// App is the api_tokens Caddy app. It owns the token database (an embedded
// Badger directory, or PostgreSQL for a fleet of Caddy nodes), the
// failed-login throttle in it, the expiry alert loop and its SMTP settings. The
// api_token_auth and api_token_admin handlers and the api_token
// authentication provider use it; when a config has neither a global
// `api_tokens` block nor an "api_tokens" app in JSON, they get one with the
// defaults below.
//
// The database outlives config generations: `caddy reload` shares one open
// database between the old and the new config, so no data is lost and
// serving never stops.
type App struct {
	// Where the tokens are kept: {"module": "badger", "path": "..."} (the
	// default) or {"module": "postgres", "dsn": "..."} for a fleet of Caddy
	// nodes sharing one PostgreSQL database.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=api_tokens.storage inline_key=module"`

	// Shorthand for {"module": "badger", "path": storage_path}: the
	// directory of the Badger database. Default: "api_tokens" under Caddy's
	// data directory. Two configs pointing at the same directory share it.
	StoragePath string `json:"storage_path,omitempty"`

	// With PostgreSQL: after this long without confirming that it has
	// every change, a node answers 503 to tokens instead of trusting what
	// it holds. Default: never; it keeps verifying from memory while the
	// database is unreachable.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`

	// How long a temporary token from POST /login lives. Default: 12h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`

	// The lifetime, and the maximum lifetime, of a permanent token. Default
	// and maximum: 365d.
	PermanentTokenLifetime caddy.Duration `json:"permanent_token_lifetime,omitempty"`

	// The administrator to create at start when the store has no admin yet.
	// Placeholders such as {env.API_TOKENS_ADMIN} are replaced. Without it
	// (or when both values are empty after replacement), an "admin" user
	// with a random password is created and the password logged once at
	// WARN level.
	BootstrapAdmin *BootstrapAdmin `json:"bootstrap_admin,omitempty"`

	// How often the alert loop checks for expiring permanent tokens. It
	// also runs at once after a setting changes. Default: 1h.
	AlertInterval caddy.Duration `json:"alert_interval,omitempty"`

	// How long audit entries are kept. Older ones are deleted at start and
	// every hour, and the deletion is itself recorded in the audit log.
	// Default: kept forever. At least 1d.
	AuditRetention caddy.Duration `json:"audit_retention,omitempty"`

	// How many login sessions a user may hold at once; a login beyond it
	// ends the user's oldest session, on every node (audited as
	// session_ended). Default: 50.
	MaxSessionsPerUser int `json:"max_sessions_per_user,omitempty"`

	// Failed logins are counted per client network: this many leading bits
	// of an IPv4 address, and of an IPv6 address, make one network.
	// Default: 32 and 64 (one IPv4 address; one IPv6 /64, which whoever
	// holds one address of it usually holds whole).
	LoginIPv4Prefix int `json:"login_ipv4_prefix,omitempty"`
	LoginIPv6Prefix int `json:"login_ipv6_prefix,omitempty"`

	// The mail server for expiry notification emails. Without it, faults
	// and metrics still work but no email is sent.
	SMTP *SMTPConfig `json:"smtp,omitempty"`

	// The scope catalogue: the scopes users and tokens may carry and
	// routes may require (require_scope), each a name of 1-64 characters
	// of a-z, 0-9, '.', '_', ':' and '-', with a description for the
	// people who hand them out. At most 63. In a fleet each node declares
	// its own; a token carrying a scope a node does not declare is
	// refused on that node's scoped routes.
	Scopes []storage.Scope `json:"scopes,omitempty"`

	db          tokenDatabase
	shared      *sharedState
	poolKey     string
	logger      *zap.Logger
	ctx         caddy.Context
	admin       storage.NewUser // resolved bootstrap admin; empty Username means generate one
	alerting    alerting
	auditPruner auditPruner

	// boot makes the first-admin check run once per config generation,
	// from Start or from the admin handler's first request, whichever comes
	// first: Caddy starts apps in no fixed order, so the HTTP server may
	// answer before this app's Start has run.
	boot *bootstrapGuard
}

type bootstrapGuard struct {
	mu   sync.Mutex
	done atomic.Bool
}

// BootstrapAdmin names the first administrator.
type BootstrapAdmin struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
}

// SMTPConfig is the mail server used for notification emails.
// Placeholders in every string field are replaced at provisioning.
type SMTPConfig struct {
	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Encryption is "none", "starttls" or "tls". Default: "starttls".
	Encryption string `json:"encryption,omitempty"`
	// From is the sender, e.g. "API tokens <noreply@example.com>".
	From string `json:"from,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "api_tokens",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision fills in defaults, replaces placeholders, checks the config and
// opens (or joins) the shared database.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.boot = new(bootstrapGuard)
	a.setDefaults()
	if err := a.replacePlaceholders(); err != nil {
		return err
	}
	if err := a.validate(); err != nil {
		return err
	}
	if err := a.loadDatabase(ctx); err != nil {
		return err
	}
	shared, err := loadShared(a.db, a.storeOptions(), a.logger)
	if err != nil {
		return err
	}
	a.shared, a.poolKey = shared, a.db.poolKey()
	// A reload on the same database keeps the store open: the new
	// config's max_staleness and scope catalogue apply to it from now on.
	shared.store.SetMaxStaleness(time.Duration(a.MaxStaleness))
	shared.store.SetScopes(a.Scopes)
	return a.alerting.provision(a)
}

// loadDatabase provisions the storage module: the one configured, or
// Badger in storage_path (or its default directory).
func (a *App) loadDatabase(ctx caddy.Context) error {
	if a.StorageRaw == nil {
		a.db = &BadgerStorage{Path: a.StoragePath}
		return a.db.(*BadgerStorage).Provision(ctx)
	}
	mod, err := ctx.LoadModule(a, "StorageRaw")
	if err != nil {
		return fmt.Errorf("loading the storage module: %v", err)
	}
	a.db = mod.(tokenDatabase)
	if a.MaxStaleness != 0 && !a.db.fleet() {
		return errors.New("max_staleness applies to storage postgres only: a Badger database is never stale")
	}
	return nil
}

// storeOptions are the options of the store this config opens (a reload
// on the same database reuses the open store and its options).
func (a *App) storeOptions() storage.Options {
	opts := storage.Options{
		Clock:        storage.SystemClock{},
		Logger:       a.logger.Named("storage"),
		MaxStaleness: time.Duration(a.MaxStaleness),
	}
	if s, ok := a.db.(storeOptionsSetter); ok {
		s.setStoreOptions(&opts)
	}
	return opts
}

func (a *App) setDefaults() {
	if a.SessionTTL == 0 {
		a.SessionTTL = caddy.Duration(defaultSessionTTL)
	}
	if a.PermanentTokenLifetime == 0 {
		a.PermanentTokenLifetime = caddy.Duration(defaultPermanentTokenLifetime)
	}
	if a.AlertInterval == 0 {
		a.AlertInterval = caddy.Duration(defaultAlertInterval)
	}
	if a.MaxSessionsPerUser == 0 {
		a.MaxSessionsPerUser = admin.DefaultMaxSessionsPerUser
	}
	if a.SMTP != nil {
		if a.SMTP.Encryption == "" {
			a.SMTP.Encryption = alerts.EncryptionSTARTTLS
		}
		if port, ok := alerts.DefaultSMTPPort(a.SMTP.Encryption); ok && a.SMTP.Port == 0 {
			a.SMTP.Port = port
		}
	}
}

// replacePlaceholders resolves {env.*} and the other global placeholders in
// the secrets and addresses, so they can come from the environment instead
// of the config file.
func (a *App) replacePlaceholders() error {
	repl := caddy.NewReplacer()
	if a.BootstrapAdmin != nil {
		user := repl.ReplaceKnown(a.BootstrapAdmin.Username, "")
		pass := repl.ReplaceKnown(a.BootstrapAdmin.Password, "")
		switch {
		case user == "" && pass == "":
			// Both unset (typically the env vars are missing): fall back to
			// a generated admin, as if bootstrap_admin were absent.
		case user == "":
			return errors.New("bootstrap_admin: the username is empty (is its environment variable set?)")
		case pass == "":
			return fmt.Errorf("bootstrap_admin: the password for %q is empty (is its environment variable set?)", user)
		default:
			a.admin = storage.NewUser{Username: user, Password: pass, Admin: true}
		}
		a.warnIfLiteral("bootstrap_admin", a.BootstrapAdmin.Password, pass, "{env.API_TOKENS_ADMIN_PASSWORD}")
	}
	if s := a.SMTP; s != nil {
		s.Host = repl.ReplaceKnown(s.Host, "")
		s.Username = repl.ReplaceKnown(s.Username, "")
		password := repl.ReplaceKnown(s.Password, "")
		a.warnIfLiteral("smtp", s.Password, password, "{env.SMTP_PASSWORD}")
		s.Password = password
		s.From = repl.ReplaceKnown(s.From, "")
	}
	return nil
}

// warnIfLiteral warns when a password is written in the config itself:
// Caddy serves its config on the admin endpoint's /config and saves it in
// autosave.json, with the password in it. A placeholder is kept there
// unresolved, so it is the way to keep the secret out.
func (a *App) warnIfLiteral(option, raw, resolved, example string) {
	if raw == "" || raw != resolved {
		return // empty, or a placeholder was resolved
	}
	a.logger.Warn(option+" has its password written in the config, so Caddy's /config API and autosave.json show it; "+
		"pass it with a placeholder such as "+example+" and change the password",
		zap.String("option", option))
}

// validate checks the config without changing anything. Provision calls
// it before it opens the database, so the app is not a caddy.Validator:
// Caddy would check the same config a second time.
func (a *App) validate() error {
	if a.StorageRaw != nil && a.StoragePath != "" {
		return errors.New("set storage or storage_path, not both (storage_path is short for storage badger { path <dir> })")
	}
	if a.MaxStaleness != 0 {
		if err := checkDuration("max_staleness", a.MaxStaleness, time.Second, maxTokenLifetime); err != nil {
			return err
		}
	}
	if err := checkDuration("session_ttl", a.SessionTTL, time.Minute, maxTokenLifetime); err != nil {
		return err
	}
	if err := checkDuration("permanent_token_lifetime", a.PermanentTokenLifetime, time.Hour, maxTokenLifetime); err != nil {
		return err
	}
	if err := checkDuration("alert_interval", a.AlertInterval, minAlertInterval, maxTokenLifetime); err != nil {
		return err
	}
	if a.AuditRetention != 0 {
		if err := checkDuration("audit_retention", a.AuditRetention, minAuditRetention, maxAuditRetention); err != nil {
			return err
		}
	}
	if a.MaxSessionsPerUser < 1 || a.MaxSessionsPerUser > maxSessionsPerUser {
		return fmt.Errorf("max_sessions_per_user must be 1-%d, got %d", maxSessionsPerUser, a.MaxSessionsPerUser)
	}
	if a.LoginIPv4Prefix < 0 || a.LoginIPv4Prefix > 32 {
		return fmt.Errorf("login_ipv4_prefix must be 1-32 bits, got %d", a.LoginIPv4Prefix)
	}
	if a.LoginIPv6Prefix < 0 || a.LoginIPv6Prefix > 128 {
		return fmt.Errorf("login_ipv6_prefix must be 1-128 bits, got %d", a.LoginIPv6Prefix)
	}
	if err := validateCatalogue(a.Scopes); err != nil {
		return err
	}
	if a.SMTP != nil {
		return a.SMTP.validate()
	}
	return nil
}

// validateCatalogue checks the scope catalogue: well-formed names, none
// twice, at most storage.MaxScopes.
func validateCatalogue(scopes []storage.Scope) error {
	if len(scopes) > storage.MaxScopes {
		return fmt.Errorf("scopes: at most %d scopes may be declared, got %d", storage.MaxScopes, len(scopes))
	}
	seen := map[string]bool{}
	for _, sc := range scopes {
		if err := storage.ValidateScopeName(sc.Name); err != nil {
			return fmt.Errorf("scope %q: %s", sc.Name, strings.TrimPrefix(err.Error(), storage.ErrInvalid.Error()+": "))
		}
		if seen[sc.Name] {
			return fmt.Errorf("scope %q is declared twice", sc.Name)
		}
		seen[sc.Name] = true
	}
	return nil
}

// scopeNames are the names of the declared scopes.
func (a *App) scopeNames() []string {
	names := make([]string, len(a.Scopes))
	for i, sc := range a.Scopes {
		names[i] = sc.Name
	}
	return names
}

// loginThrottle is the login throttle's policy under this config.
func (a *App) loginThrottle() throttle.Policy {
	p := throttle.DefaultPolicy
	if a.LoginIPv4Prefix != 0 {
		p.IPv4Prefix = a.LoginIPv4Prefix
	}
	if a.LoginIPv6Prefix != 0 {
		p.IPv6Prefix = a.LoginIPv6Prefix
	}
	return p
}

func checkDuration(name string, d caddy.Duration, lo, hi time.Duration) error {
	if time.Duration(d) < lo || time.Duration(d) > hi {
		return fmt.Errorf("%s must be between %s and %s, got %s", name, formatDuration(lo), formatDuration(hi), formatDuration(time.Duration(d)))
	}
	return nil
}

// formatDuration prints durations the way users write them: whole days as
// "365d", and "1h" or "1m" rather than Go's "1h0m0s" or "1m0s".
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= day && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	default:
		return d.String()
	}
}

func (s *SMTPConfig) validate() error {
	if s.Host == "" {
		return errors.New("smtp: host is required")
	}
	if s.Port < 1 || s.Port > 65535 {
		return fmt.Errorf("smtp: port must be from 1 to 65535, got %d", s.Port)
	}
	switch s.Encryption {
	case alerts.EncryptionNone, alerts.EncryptionSTARTTLS, alerts.EncryptionTLS:
	default:
		return fmt.Errorf("smtp: encryption must be none, starttls or tls, got %q", s.Encryption)
	}
	if s.From == "" {
		return errors.New("smtp: from is required, e.g. \"API tokens <noreply@example.com>\"")
	}
	if _, err := mail.ParseAddress(s.From); err != nil {
		return fmt.Errorf("smtp: from %q is not an email address: %v", s.From, err)
	}
	if (s.Username == "") != (s.Password == "") {
		return errors.New("smtp: set both username and password, or neither")
	}
	return nil
}

// Start creates the first administrator if needed and starts the alert
// loop. The admin is created here rather than in Provision so that
// `caddy validate` and `caddy adapt` never write to the database.
func (a *App) Start() error {
	if err := a.bootstrap(); err != nil {
		return err
	}
	if err := a.alerting.start(); err != nil {
		return err
	}
	a.auditPruner.start(a) // last: a failed Start is not followed by Stop
	return nil
}

// Stop stops this config generation's alert loop and audit pruning. The
// database stays open until no config uses it (see Cleanup).
func (a *App) Stop() error {
	a.auditPruner.stop()
	return a.alerting.stop()
}

// Cleanup releases this config generation's hold on the shared database;
// the last one to let go closes it.
func (a *App) Cleanup() error {
	if a.poolKey == "" {
		return nil
	}
	key := a.poolKey
	a.poolKey = ""
	deleted, err := sharedPool.Delete(key)
	if deleted {
		a.logger.Debug("closed token database", zap.String("database", a.db.describe()))
	}
	if err != nil {
		return fmt.Errorf("closing token database (%s): %v", a.db.describe(), err)
	}
	return nil
}

// bootstrap runs ensureAdmin once; it is cheap to call on every request.
func (a *App) bootstrap() error {
	if a.boot.done.Load() {
		return nil
	}
	a.boot.mu.Lock()
	defer a.boot.mu.Unlock()
	if a.boot.done.Load() {
		return nil
	}
	if err := a.ensureAdmin(); err != nil {
		return err
	}
	a.boot.done.Store(true)
	return nil
}

// ensureAdmin makes sure the store has an administrator: the configured
// bootstrap admin, or else a generated one whose password is logged once.
func (a *App) ensureAdmin() error {
	ctx := storage.WithActor(context.Background(), "system", "")
	if a.admin.Username != "" {
		created, err := a.shared.store.EnsureAdmin(ctx, a.admin)
		if err != nil {
			return fmt.Errorf("bootstrap_admin %q: %w", a.admin.Username, err)
		}
		if created {
			a.logger.Info("created the bootstrap admin", zap.String("username", a.admin.Username))
		}
		return nil
	}
	password := rand.Text()
	created, err := a.shared.store.EnsureAdmin(ctx, storage.NewUser{Username: generatedAdmin, Password: password, Admin: true})
	if err != nil {
		return fmt.Errorf("creating the first admin: %w", err)
	}
	if created {
		// The spec asks for this one-time log line: it is the only way to
		// learn the generated password. It is never logged again.
		a.logger.Warn("no admin existed and bootstrap_admin is not set, so an admin was created with a random password; "+
			"log in with POST /login and change it with PATCH /users/admin {\"password\": \"<new>\", \"current_password\": \"<this one>\"}, "+
			"or set bootstrap_admin before the first start",
			zap.String("username", generatedAdmin), zap.String("password", password))
	}
	return nil
}

// Store returns the shared token store.
func (a *App) Store() *storage.Store { return a.shared.store }

// verifier returns what the gateway asks on every request: the store's
// in-memory token check, nothing more.
func (a *App) verifier() tokenVerifier { return a.shared.store.Verifier() }

// Clock returns the clock shared by the store and the admin API.
func (a *App) Clock() storage.Clock { return a.shared.clock }

// getApp returns the config's api_tokens app, creating one with defaults
// when the config does not have it. ctx.App does exactly that: an app
// missing from the config is loaded from empty JSON, provisioned, and then
// started and stopped with the config like any other app.
func getApp(ctx caddy.Context) (*App, error) {
	mod, err := ctx.App("api_tokens")
	if err != nil {
		return nil, err
	}
	return mod.(*App), nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
