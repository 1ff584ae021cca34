// Package pgstore is the PostgreSQL storage backend of API tokens for
// Caddy: several Caddy nodes share one database, and a change made on any
// of them is applied by every other within a second.
//
// Data lives in one key-value table written by the same rules as on
// Badger (package storage). Every transaction that changes a key the
// in-memory verifier cares about writes a change row in the same
// transaction. Each node reads the change rows it has not applied yet, in
// an order that cannot skip a row whose transaction commits late:
// positions are PostgreSQL snapshots (xmax and the transactions in
// progress), not sequence numbers. LISTEN/NOTIFY only wakes nodes up; a
// short poll covers a lost notification, a dropped connection and poolers
// that do not pass notifications.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Options tune the backend. Zero values get defaults.
type Options struct {
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// PollInterval is how often a node reads the change log without
	// having been notified: the bound on how late a change arrives when a
	// notification is lost. Default 200ms.
	PollInterval time.Duration
	// Timeout bounds each round trip to the database (each statement,
	// not a whole transaction, so a long walk is not cut short), so a
	// database that is down or hung gives kv.ErrUnavailable in
	// seconds instead of a hang. Default 5s.
	Timeout time.Duration
	// ChangeRetention is how long change rows are kept. A node that was
	// disconnected for longer reloads everything when it comes back.
	// Default 24h.
	ChangeRetention time.Duration
	// MaintenanceInterval is how often expired rows are deleted and old
	// change rows pruned (by one node at a time). Default 1m.
	MaintenanceInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.ChangeRetention <= 0 {
		o.ChangeRetention = 24 * time.Hour
	}
	if o.MaintenanceInterval <= 0 {
		o.MaintenanceInterval = time.Minute
	}
	return o
}

// Backend is a kv.Backend on a PostgreSQL database shared by a fleet.
type Backend struct {
	pool *pgxpool.Pool
	cfg  *pgxpool.Config
	opts Options
	log  *zap.Logger
	// where names the database in messages: host, port and database,
	// never the password.
	where string

	feed *feed

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// ParseDSN checks a connection string (a libpq URI or key=value pairs)
// without connecting. Its error never quotes the string, which may hold a
// password.
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		detail := ""
		var pce *pgconn.ParseConfigError
		if errors.As(err, &pce) && errors.Unwrap(pce) != nil {
			detail = " (" + errors.Unwrap(pce).Error() + ")"
		}
		return nil, fmt.Errorf("the PostgreSQL dsn is not a valid connection string%s: use a libpq URI such as postgres://user@host:5432/db or key=value pairs (the dsn is not shown because it may hold a password)", detail)
	}
	if strings.Contains(dsn, "pool_max_conns") && cfg.MaxConns < minConns {
		return nil, fmt.Errorf("the PostgreSQL dsn sets pool_max_conns=%d: a node needs at least %d connections (the change feed's poll, a write, and the read an alert pass keeps open while it writes)", cfg.MaxConns, minConns)
	}
	return cfg, nil
}

// minConns is the smallest pool a node works with; it uses one more
// connection of its own for LISTEN.
const minConns = 3

// Open connects to the database in dsn, applies the schema migrations
// this version knows (under an advisory lock, so nodes starting together
// apply each once) and refuses a schema newer than it knows.
func Open(ctx context.Context, dsn string, opts Options) (*Backend, error) {
	opts = opts.withDefaults()
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	tuneConnections(cfg, opts.Timeout)
	b := &Backend{
		cfg:   cfg,
		opts:  opts,
		log:   opts.Logger,
		where: describe(cfg.ConnConfig.Config),
		stop:  make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(ctx, 2*opts.Timeout)
	defer cancel()
	if b.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, b.unreachable(err)
	}
	if err := b.pool.Ping(ctx); err != nil {
		b.pool.Close()
		return nil, b.unreachable(err)
	}
	if err := b.migrate(ctx); err != nil {
		b.pool.Close()
		return nil, err
	}
	return b, nil
}

// tuneConnections makes a dead connection noticed in seconds: TCP
// keepalives every few seconds, and a connect timeout, unless the dsn set
// one.
func tuneConnections(cfg *pgxpool.Config, timeout time.Duration) {
	cc := cfg.ConnConfig
	if cc.ConnectTimeout <= 0 {
		cc.ConnectTimeout = timeout
	}
	d := &net.Dialer{
		Timeout:         cc.ConnectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3},
	}
	cc.DialFunc = d.DialContext
	cfg.HealthCheckPeriod = 10 * time.Second
	if !strings.Contains(cfg.ConnString(), "pool_max_conns") {
		// Enough for concurrent admin calls and a read nested in another
		// (the alert walk reads alert states as it goes).
		cfg.MaxConns = 10
	}
}

// describe names a database for messages without its password.
func describe(c pgconn.Config) string {
	return fmt.Sprintf("PostgreSQL at %s:%d, database %q, user %q", c.Host, c.Port, c.Database, c.User)
}

// unreachable words a failure to connect. pgx's connect errors name the
// user and database and never the password.
func (b *Backend) unreachable(err error) error {
	return fmt.Errorf("%w: cannot connect to %s: %v", kv.ErrUnavailable, b.where, err)
}

// Close stops the change feed and closes every connection.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.wg.Wait()
		b.pool.Close()
	})
	return nil
}

// closed reports whether Close has begun.
func (b *Backend) closed() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// withTimeout bounds ctx by the backend's timeout.
func (b *Backend) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// untilClosed is a context for background work, cancelled by Close.
func (b *Backend) untilClosed() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Schema. Each migration runs in its own transaction; the version table
// says which have run.
var migrations = []string{
	// 1: the key-value table the rules write, the change log the feed
	// reads, and the sequence behind NextSeq.
	`CREATE TABLE api_tokens_kv (
		key bytea PRIMARY KEY,
		value bytea NOT NULL,
		expires_at timestamptz
	);
	CREATE INDEX api_tokens_kv_expires ON api_tokens_kv (expires_at) WHERE expires_at IS NOT NULL;
	CREATE TABLE api_tokens_changes (
		xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
		key bytea NOT NULL,
		hint bytea,
		at timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX api_tokens_changes_xid ON api_tokens_changes (xid);
	CREATE INDEX api_tokens_changes_at ON api_tokens_changes (at);
	CREATE TABLE api_tokens_feed (
		id int PRIMARY KEY CHECK (id = 1),
		pruned_below bigint NOT NULL
	);
	INSERT INTO api_tokens_feed VALUES (1, 0);
	CREATE SEQUENCE api_tokens_seq INCREMENT BY 1000;`,
}

// migrateLock is the advisory lock key under which migrations run.
const migrateLock = 0x61706974 // "apit"

// migrate brings the schema to the newest version this code knows, in one
// transaction that holds a transaction-level advisory lock, so nodes
// starting together apply each migration once. A session-level lock
// would not do: behind a pooler in transaction mode (PgBouncer) it stays
// held by whichever server connection ran it, and the next node to start
// waits for it forever.
func (b *Backend) migrate(ctx context.Context) error {
	var applied []int
	var newer error
	step := "starting the migration"
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		applied, newer = applied[:0], nil
		step = "taking the migration lock"
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return err
		}
		step = "reading the schema version"
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS api_tokens_schema (version int NOT NULL)`); err != nil {
			return err
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM api_tokens_schema`).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			_, err = tx.Exec(ctx, `INSERT INTO api_tokens_schema VALUES (0)`)
		}
		if err != nil {
			return err
		}
		if version > len(migrations) {
			newer = fmt.Errorf("the database schema of %s is version %d, newer than this Caddy knows (%d): upgrade Caddy on this node, or point it at another database", b.where, version, len(migrations))
			return newer
		}
		for v := version; v < len(migrations); v++ {
			step = fmt.Sprintf("applying schema migration %d", v+1)
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE api_tokens_schema SET version = $1`, v+1); err != nil {
				return err
			}
			applied = append(applied, v+1)
		}
		step = "committing the schema migrations"
		return nil
	})
	switch {
	case newer != nil:
		return newer
	case err != nil:
		return b.failed(step, err)
	}
	for _, v := range applied {
		b.log.Info("applied a schema migration", zap.Int("version", v), zap.String("database", b.where))
	}
	return nil
}

// failed words an error of the database for a step, classified: an
// unreachable database wraps kv.ErrUnavailable.
func (b *Backend) failed(step string, err error) error {
	if b.closed() {
		return kv.ErrClosed
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %s: %s: %v", kv.ErrUnavailable, b.where, step, err)
	}
	return fmt.Errorf("%s: %s: %w", b.where, step, err)
}

// Interface guards
var (
	_ kv.Backend    = (*Backend)(nil)
	_ kv.Syncer     = (*Backend)(nil)
	_ kv.CatchUpper = (*Backend)(nil)
)
