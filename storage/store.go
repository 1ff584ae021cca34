package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Errors the Store returns. They are wrapped with a message a person can
// act on (errors.Is still matches); the admin API maps each to its HTTP
// status.
var (
	ErrUnavailable = kv.ErrUnavailable             // 503: the database cannot be reached; try again
	ErrClosed      = kv.ErrClosed                  // every call after Close
	ErrNotFound    = errors.New("not found")       // 404
	ErrConflict    = errors.New("conflict")        // 409: exists already, duplicate name
	ErrLastAdmin   = errors.New("last admin")      // 409: the last admin cannot be deleted or demoted
	ErrInvalid     = errors.New("invalid")         // 400: a value the store refuses
	ErrBadLogin    = errors.New("bad credentials") // 401: unknown user, wrong password or disabled user
)

// Store is users, tokens, settings, alert state and the audit log: the
// rules of API tokens for Caddy, written once over a kv.Backend. Every
// method is safe for concurrent use.
//
// Mutations are atomic and durable once they return nil (they survive
// kill -9), and write their audit entry in the same transaction, taking
// the actor and client address from the context (see WithActor).
//
// Requests are verified from memory, by the Verifier, which the backend's
// change feed keeps equal to the database (subscriber.go), not the local
// write path: so a single node and a fleet of nodes on one database are
// the same code. A mutation returns once this node's verifier has applied
// it, and every other node applies it as its feed delivers it.
type Store struct {
	clock  Clock
	tokens *verifier.Verifier
	logins *throttle.Throttle

	db     kv.Backend
	log    *zap.Logger
	cost   int
	flushN time.Duration
	batch  int

	// orphans are the missing users that token records referred to at the
	// last reset: a user deletion interrupted before its tombstone existed.
	// The feed's goroutine sets it.
	orphans atomic.Pointer[map[string]bool]

	hooksMu          sync.Mutex
	onSettingsChange []func()
	onAlertView      []func([]byte)

	dummyOnce sync.Once
	dummyHash []byte

	// purgeHook, if set, runs before each batch of a user deletion's
	// token purge. Tests only.
	purgeHook func()

	maxStale atomic.Int64 // nanoseconds; 0: never stale

	scopes atomic.Pointer[catalogue] // SetScopes

	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Options configure Open. Zero values get defaults.
type Options struct {
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// LastUsedFlushInterval is how often batched last-used times are written;
	// it is the staleness bound of last_used_at. Default 30s.
	LastUsedFlushInterval time.Duration
	// PasswordCost is the bcrypt cost for new password hashes. Default
	// bcrypt.DefaultCost; tests use bcrypt.MinCost for speed.
	PasswordCost int
	// MaxStaleness, for a backend shared by several nodes: once this node
	// has not confirmed for this long that it has every change, the
	// verifier answers ResultUnavailable to well-formed tokens. 0 never
	// does.
	MaxStaleness time.Duration
	// BatchSize is how many keys a batched job (a user's deletion, ending
	// a user's sessions, pruning the audit log) handles per transaction.
	// Default 1000: each token purged costs up to six key deletions, so a
	// batch stays far below Badger's transaction size limit (which
	// deleting a user in one transaction hit at about 25k tokens) and
	// holds no lock for long.
	BatchSize int
}

func (o Options) withDefaults() Options {
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.LastUsedFlushInterval <= 0 {
		o.LastUsedFlushInterval = 30 * time.Second
	}
	if o.PasswordCost == 0 {
		o.PasswordCost = bcrypt.DefaultCost
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	return o
}

// Open builds the store over db: it subscribes to db's change feed (which
// loads every token into memory), finishes any user deletion that was
// interrupted, and starts the background work (last-use flushes, dropping
// expired sessions from memory). The Store owns db from then on: Close
// closes it, and so does a failed Open.
func Open(ctx context.Context, db kv.Backend, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	s := &Store{
		db:     db,
		clock:  opts.Clock,
		log:    opts.Logger,
		cost:   opts.PasswordCost,
		flushN: opts.LastUsedFlushInterval,
		batch:  opts.BatchSize,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	feed, _ := db.(kv.CatchUpper) // nil when this node is the only writer
	s.tokens = verifier.New(verifier.Config{Clock: opts.Clock, Feed: feed})
	s.logins = throttle.New(db, opts.Clock, func(u string) bool { return ValidateUsername(u) == nil })
	s.maxStale.Store(int64(opts.MaxStaleness))
	if err := db.Subscribe(ctx, subscriber{s}); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.finishDeletions(ctx); err != nil {
		s.log.Warn("could not finish deleting the tokens of deleted users; they do not work, and the next start tries again", zap.Error(err))
	}
	go s.background()
	return s, nil
}

// OnSettingsChange registers fn to run whenever a setting changes, on
// this node or on any other node of the database. fn runs while the change
// is being applied: it must return at once and must not call the store
// (hand the news to a goroutine, as alerts.Shared.Trigger does).
func (s *Store) OnSettingsChange(fn func()) {
	s.hooksMu.Lock()
	s.onSettingsChange = append(s.onSettingsChange, fn)
	s.hooksMu.Unlock()
}

func (s *Store) settingsChanged() {
	s.hooksMu.Lock()
	hooks := s.onSettingsChange
	s.hooksMu.Unlock()
	for _, fn := range hooks {
		fn()
	}
}

func (s *Store) alertViewChanged(view []byte) {
	s.hooksMu.Lock()
	hooks := s.onAlertView
	s.hooksMu.Unlock()
	for _, fn := range hooks {
		fn(view)
	}
}

// Close flushes batched last-used times, stops the background work and
// closes the backend. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.flushLastUsed(context.Background())
		s.closed.Store(true)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// background flushes last-used times and prunes the verifier's memory
// until Close, and watches how
// long ago a shared backend last synced.
func (s *Store) background() {
	defer close(s.done)
	t := time.NewTicker(s.flushN)
	defer t.Stop()
	syncer, _ := s.db.(kv.Syncer)
	var watch <-chan time.Time
	if syncer != nil {
		// max_staleness is at least a second (the Caddyfile checks it),
		// and may change at a config reload: a check every 250ms.
		w := time.NewTicker(250 * time.Millisecond)
		defer w.Stop()
		watch = w.C
	}
	for {
		select {
		case <-s.stop:
			return
		case <-watch:
			s.checkStaleness(syncer)
		case <-t.C:
			s.flushLastUsed(context.Background())
			s.tokens.Prune()
		}
	}
}

// SetMaxStaleness changes Options.MaxStaleness of an open store (a config
// reload keeps the store open).
func (s *Store) SetMaxStaleness(d time.Duration) { s.maxStale.Store(int64(d)) }

// checkStaleness sets stale when the backend has not synced for longer
// than the max staleness, and clears it once it has (or there is none).
func (s *Store) checkStaleness(syncer kv.Syncer) {
	maxStale := time.Duration(s.maxStale.Load())
	age := time.Since(syncer.SyncStatus().LastSync)
	if stale := maxStale > 0 && age > maxStale; s.tokens.SetStale(stale) {
		if stale {
			s.log.Error("refusing tokens with 503: this node has not synced with the token database for longer than max_staleness",
				zap.Duration("since_last_sync", age.Round(time.Millisecond)), zap.Duration("max_staleness", maxStale))
		} else {
			s.log.Info("synced with the token database again; verifying tokens")
		}
	}
}

// writeTxn is one mutation: the backend's transaction, its time and the
// audit entries to write with it.
type writeTxn struct {
	kv.Writer
	now   time.Time
	audit []AuditEntry
}

// record adds an audit entry, written in the same transaction.
func (w *writeTxn) record(ctx context.Context, action, target, detail string) {
	a := CallerFrom(ctx)
	w.audit = append(w.audit, AuditEntry{
		Time: w.now, Actor: a.Name, ActorTokenID: a.TokenID, ActorTokenKind: a.TokenKind,
		Action: action, Target: target, Detail: detail, ClientIP: a.ClientIP,
	})
}

// update runs fn in a read-write transaction, writes the audit entries fn
// recorded, and commits. If fn fails nothing is written. fn may run again
// if the backend retries the transaction, so it must keep its results in
// variables it overwrites, never appends to.
func (s *Store) update(ctx context.Context, fn func(w *writeTxn) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.Update(ctx, func(tx kv.Writer) error {
		w := &writeTxn{Writer: tx, now: s.clock.Now()}
		if err := fn(w); err != nil {
			return err
		}
		return writeAudit(w, w.audit)
	})
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(r kv.Reader) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(ctx, fn)
}

// getValue reads a value and says what it was reading if that fails.
func getValue(r kv.Reader, key string) ([]byte, bool, error) {
	val, found, err := r.Get(key)
	if err != nil {
		return nil, false, fmt.Errorf("storage: read %s: %w", keyKind(key), err)
	}
	return val, found, nil
}

func exists(r kv.Reader, key string) (bool, error) {
	_, found, err := getValue(r, key)
	return found, err
}

func set(w kv.Writer, key string, val []byte) error {
	if err := w.Set(key, val, 0); err != nil {
		return fmt.Errorf("storage: write %s: %w", keyKind(key), err)
	}
	return nil
}

func setTTL(w kv.Writer, key string, val []byte, ttl time.Duration) error {
	if err := w.Set(key, val, ttl); err != nil {
		return fmt.Errorf("storage: write %s: %w", keyKind(key), err)
	}
	return nil
}

func del(w kv.Writer, key string) error {
	if err := w.Delete(key); err != nil {
		return fmt.Errorf("storage: delete %s: %w", keyKind(key), err)
	}
	return nil
}

// scanKeys calls fn with the part after prefix of every key under prefix.
func scanKeys(r kv.Reader, prefix string, fn func(suffix string) error) error {
	return r.Scan(prefix, kv.ScanOptions{KeysOnly: true}, func(key, _ []byte) error {
		return fn(string(key[len(prefix):]))
	})
}

// ttlUntil is the TTL for a record that the clock says expires at t. The
// TTL only collects garbage and runs on the backend's clock, so it is
// rounded up generously; a minute is the floor Badger can honour well.
func (s *Store) ttlUntil(t time.Time) time.Duration {
	return max(t.Sub(s.clock.Now()), 0) + time.Minute
}

// AlertState is what the alert loop remembers about one permanent token so
// that a restart, a reload or a second pass never repeats an email.
type AlertState struct {
	// NotifiedDays is the tightest threshold (in days) already emailed;
	// 0 means none yet.
	NotifiedDays int `json:"notified_days,omitempty"`
	// RaisedAt is when the token's fault was first raised.
	RaisedAt time.Time `json:"raised_at,omitzero"`
}

type actorKey struct{}

// Actor is who makes a change, as the audit log records it.
type Actor struct {
	// Name is the username, or "system" or "cli" for the product itself.
	Name string
	// ClientIP is the address the request came from, if any.
	ClientIP string
	// TokenID and TokenKind name the token the request was made with, so
	// "what did this leaked token do" has an answer. Empty for a login
	// (a password, not a token) and for the product itself.
	TokenID   string
	TokenKind TokenKind
}

// WithActor returns a context whose mutations are audited as done by actor
// from clientIP.
func WithActor(ctx context.Context, actor, clientIP string) context.Context {
	return WithCaller(ctx, Actor{Name: actor, ClientIP: clientIP})
}

// WithCaller returns a context whose mutations are audited as done by a,
// with the token it acted with.
func WithCaller(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// CallerFrom returns the actor set by WithCaller or WithActor; its Name is
// "system" when none was set.
func CallerFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok {
		return a
	}
	return Actor{Name: "system"}
}

// Clock returns the store's clock.
func (s *Store) Clock() Clock { return s.clock }

// Logins returns the login throttle, which shares the store's database.
func (s *Store) Logins() *throttle.Throttle { return s.logins }

// Verifier returns what decides requests from memory: the gateway's only
// need, and the admin API's for its callers' tokens.
func (s *Store) Verifier() *verifier.Verifier { return s.tokens }
