package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
)

func init() {
	caddy.RegisterModule(BadgerStorage{})
	caddy.RegisterModule(PostgresStorage{})
}

// tokenDatabase is a module of the api_tokens.storage namespace: where the
// api_tokens app keeps its data.
type tokenDatabase interface {
	// poolKey names the database, so config generations on the same one
	// share one open store. It may hold secrets: it is never logged.
	poolKey() string
	// describe names the database for logs, without secrets.
	describe() string
	// open connects to the database; the store's rules are opened over it.
	open(ctx context.Context, log *zap.Logger) (kv.Backend, error)
	// fleet reports whether several Caddy nodes may use the database.
	fleet() bool
}

// storeOptionsSetter is a storage module that also sets options of the
// store opened on it: the tests' module (export_test.go) gives the store
// a fake clock, so expiry is tested without waiting, and a cheap password
// hash.
type storeOptionsSetter interface {
	setStoreOptions(*storage.Options)
}

// BadgerStorage keeps the tokens in an embedded Badger database in one
// directory, used by this Caddy alone. It is the default; the api_tokens
// option `storage_path <dir>` is its shorthand.
type BadgerStorage struct {
	// The database directory. Default: "api_tokens" under Caddy's data
	// directory.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (BadgerStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "api_tokens.storage.badger", New: func() caddy.Module { return new(BadgerStorage) }}
}

// Provision fills in the default directory and resolves placeholders.
func (b *BadgerStorage) Provision(caddy.Context) error {
	b.Path = caddy.NewReplacer().ReplaceKnown(b.Path, "")
	if b.Path == "" {
		b.Path = filepath.Join(caddy.AppDataDir(), "api_tokens")
	}
	abs, err := filepath.Abs(b.Path)
	if err != nil {
		return fmt.Errorf("storage badger: path %q: %v", b.Path, err)
	}
	b.Path = abs
	return nil
}

func (b *BadgerStorage) poolKey() string  { return "badger:" + b.Path }
func (b *BadgerStorage) describe() string { return "Badger at " + b.Path }
func (b *BadgerStorage) fleet() bool      { return false }

func (b *BadgerStorage) open(_ context.Context, log *zap.Logger) (kv.Backend, error) {
	return badgerstore.Open(b.Path, log)
}

// UnmarshalCaddyfile reads `storage badger { path <dir> }`.
func (b *BadgerStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "path":
			var err error
			if b.Path, err = oneArg(d); err != nil {
				return err
			}
		default:
			return d.Errf("storage badger: unrecognized option %q (known: path)", d.Val())
		}
	}
	return nil
}

// PostgresStorage keeps the tokens in a PostgreSQL database that several
// Caddy nodes share: a fleet. Each node still verifies tokens from memory;
// a change made on any node is applied by every other within a second.
type PostgresStorage struct {
	// The connection string: a libpq URI (postgres://user@host:5432/db)
	// or key=value pairs. Write the password as a placeholder, such as
	// {env.API_TOKENS_DATABASE_URL} for the whole string or a
	// {file.*} placeholder, so it stays out of Caddy's /config output and
	// autosave.json.
	DSN string `json:"dsn,omitempty"`

	resolved string
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "api_tokens.storage.postgres", New: func() caddy.Module { return new(PostgresStorage) }}
}

// Provision resolves placeholders in the DSN and checks its form, without
// connecting (caddy validate and adapt never touch the database). A
// password written literally in the config is warned about.
func (p *PostgresStorage) Provision(ctx caddy.Context) error {
	if p.DSN == "" {
		return errors.New("storage postgres: dsn is required, e.g. dsn {env.API_TOKENS_DATABASE_URL}")
	}
	if literalPassword(p.DSN) {
		ctx.Logger().Warn("the storage postgres dsn holds a password written in the config, which Caddy's /config API and autosave.json show; " +
			"use a placeholder such as {env.API_TOKENS_DATABASE_URL} instead")
	}
	p.resolved = caddy.NewReplacer().ReplaceKnown(p.DSN, "")
	if p.resolved == "" {
		return errors.New("storage postgres: the dsn is empty after replacing placeholders (is its environment variable set?)")
	}
	if _, err := pgstore.ParseDSN(p.resolved); err != nil {
		return fmt.Errorf("storage postgres: %v", err)
	}
	return nil
}

// literalPassword reports whether the DSN as written in the config (before
// placeholders are replaced) carries a password, or part of one, that is
// not a placeholder. Each placeholder is read as a number that parses in
// any part of a DSN (a port too), so the literal parts are checked even
// when placeholders make the DSN unparseable as written.
func literalPassword(dsn string) bool {
	const stand = "65431" // stands for a placeholder; a valid port too
	cfg, err := pgstore.ParseDSN(placeholder.ReplaceAllString(dsn, stand))
	if err != nil {
		return false
	}
	return strings.ReplaceAll(cfg.ConnConfig.Password, stand, "") != ""
}

// placeholder matches a Caddy placeholder such as {env.PGPASSWORD}.
var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

func (p *PostgresStorage) poolKey() string { return "postgres:" + p.resolved }
func (p *PostgresStorage) fleet() bool     { return true }

func (p *PostgresStorage) describe() string {
	cfg, err := pgstore.ParseDSN(p.resolved)
	if err != nil {
		return "PostgreSQL"
	}
	c := cfg.ConnConfig
	return fmt.Sprintf("PostgreSQL at %s:%d, database %q", c.Host, c.Port, c.Database)
}

func (p *PostgresStorage) open(ctx context.Context, log *zap.Logger) (kv.Backend, error) {
	return pgstore.Open(ctx, p.resolved, pgstore.Options{Logger: log})
}

// UnmarshalCaddyfile reads `storage postgres { dsn <dsn> }`.
func (p *PostgresStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "dsn":
			var err error
			if p.DSN, err = oneArg(d); err != nil {
				return err
			}
		default:
			return d.Errf("storage postgres: unrecognized option %q (known: dsn)", d.Val())
		}
	}
	if p.DSN == "" {
		return d.Err("storage postgres needs a dsn, e.g. dsn {env.API_TOKENS_DATABASE_URL}")
	}
	return nil
}

// logDatabase says which database was opened.
func logDatabase(log *zap.Logger, db tokenDatabase) {
	log.Info("opened token database", zap.String("database", db.describe()))
}

// Interface guards
var (
	_ caddy.Provisioner     = (*BadgerStorage)(nil)
	_ caddy.Provisioner     = (*PostgresStorage)(nil)
	_ caddyfile.Unmarshaler = (*BadgerStorage)(nil)
	_ caddyfile.Unmarshaler = (*PostgresStorage)(nil)
	_ tokenDatabase         = (*BadgerStorage)(nil)
	_ tokenDatabase         = (*PostgresStorage)(nil)
)
