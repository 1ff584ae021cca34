package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Key layout. Every query is a point read or a prefix scan:
//
//	u/<username>               user record (JSON, with the bcrypt hash)
//	t/<token id>               token record (binary, see record.go; holds the SHA-256 of the secret)
//	ut/<username>/<token id>   empty: the tokens of a user
//	un/<username>/<name>       token id: the unique name of a permanent token
//	e/<expiry ns BE>/<id>      permanent tokens in expiry order; the value is a copy of
//	                           t/<id>, kept equal by putTokenRecord, so the alert loop's walk
//	                           reads sequentially (empty in stores written before: read t/<id>)
//	lu/<token id>              last use, unix nanoseconds big-endian (batched)
//	as/<token id>              alert state (JSON)
//	s/<key>                    setting value, normalized
//	a/<time ns BE><seq BE>     audit entry (JSON), so a reverse scan is newest first
//	m/audit_seq                last audit sequence number, so keys stay unique across restarts
//	m/expiry_copies            empty: every e/ key holds its record (see fillExpiryCopies)
//
// Usernames cannot contain "/", so "ut/<user>/" and "un/<user>/" never
// overlap between users. Temporary tokens (t/, ut/, lu/) carry a Badger TTL so
// they disappear on their own; their expiry is still decided by the Clock.
const (
	prefixUser      = "u/"
	prefixToken     = "t/"
	prefixUserToken = "ut/"
	prefixName      = "un/"
	prefixExpiry    = "e/"
	prefixLastUsed  = "lu/"
	prefixAlert     = "as/"
	prefixSetting   = "s/"
	prefixAudit     = "a/"
	keyAuditSeq     = "m/audit_seq"
)

// lockFileName is our own advisory lock, taken before Badger opens, so a
// second process gets a clear message instead of Badger's.
const lockFileName = "api_tokens.lock"

// errClosed is returned by writes after Close.
var errClosed = errors.New("storage: the store is closed")

// Badger is the Store backed by a Badger database in one directory, with an
// in-memory index of token hashes for the request hot path.
type Badger struct {
	db     *badger.DB
	lock   *os.File
	dir    string
	clock  Clock
	log    *zap.Logger
	cost   int
	flushN time.Duration

	// mu serializes every mutation: the Badger transaction and the index
	// update that follows its commit happen as one step, so concurrent
	// creates have exactly one winner and readers of the index never see a
	// state that is not on disk.
	mu       sync.Mutex
	closed   bool
	auditSeq uint64 // guarded by mu
	// purging holds the names of deleted users whose token keys are not
	// all deleted yet; they cannot be created again meanwhile. Guarded by mu.
	purging map[string]bool

	idx *index

	// purgeHook, if set, runs before each batch of a user deletion's
	// token purge, outside the write lock. Tests only.
	purgeHook func()

	dummyOnce sync.Once
	dummyHash []byte

	// life lets Close wait for reads in flight: reads hold it shared,
	// Close takes it exclusively before closing Badger.
	life sync.RWMutex

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// OpenBadger opens (or creates) the store in dir and loads the token index.
func OpenBadger(dir string, opts Options) (*Badger, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create storage directory %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(dir, opts.Logger))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("cannot open storage directory %s: %w", dir, err)
	}
	s := &Badger{
		db:      db,
		lock:    lock,
		dir:     dir,
		clock:   opts.Clock,
		log:     opts.Logger,
		cost:    opts.PasswordCost,
		flushN:  opts.LastUsedFlushInterval,
		idx:     newIndex(),
		purging: map[string]bool{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	orphans, err := s.load()
	if err != nil {
		db.Close()
		lock.Close()
		return nil, fmt.Errorf("cannot load storage directory %s: %w", dir, err)
	}
	s.purgeOrphanTokens(orphans)
	s.fillExpiryCopies()
	go s.background()
	return s, nil
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
	return o
}

// lockDir takes an exclusive, non-blocking flock on a file in dir. It also
// proves the directory is writable before Badger tries.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage directory %s is not writable: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("storage directory %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("cannot lock storage directory %s: %w", dir, err)
	}
	return f, nil
}

// badgerOptions tunes Badger for a small, durable, write-light database:
// every commit is fsynced, conflicts cannot happen (writes are serialized
// by Badger.mu), and caches stay small because hot reads are served from
// the in-memory index.
func badgerOptions(dir string, log *zap.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithLogger(badgerLogger{log.Sugar()}).
		WithLoggingLevel(badger.WARNING).
		WithMetricsEnabled(false).
		WithNumMemtables(2).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithCompactL0OnClose(true).
		WithCompression(options.None) // records are mostly random hashes and ids: nothing to gain, only CPU at open
}

// badgerLogger passes Badger's warnings and errors to zap and drops the rest.
type badgerLogger struct{ s *zap.SugaredLogger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.s.Errorf("badger: "+f, a...) }
func (l badgerLogger) Warningf(f string, a ...any) { l.s.Warnf("badger: "+f, a...) }
func (badgerLogger) Infof(string, ...any)          {}
func (badgerLogger) Debugf(string, ...any)         {}

// Close flushes batched last-used times, stops the background goroutine and
// closes the database. Calling it again returns the first result.
func (s *Badger) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.flushLastUsed()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.life.Lock() // waits for reads in flight; new ones fail fast
		defer s.life.Unlock()
		s.closeErr = s.db.Close()
		if err := s.lock.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// background flushes last-used times, drops expired temporary tokens from
// memory and prunes idle cached identities until Close.
func (s *Badger) background() {
	defer close(s.done)
	t := time.NewTicker(s.flushN)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.flushLastUsed()
			now := s.clock.Now()
			s.idx.sweep(now)
			s.idx.pruneIdentities(now)
		}
	}
}

// writeTxn is the state of one mutation: the Badger transaction, its time,
// the audit entries to write with it and the index changes to apply once it
// has committed.
type writeTxn struct {
	txn   *badger.Txn
	now   time.Time
	audit []AuditEntry
	after []func()
}

// record adds an audit entry, written in the same transaction.
func (w *writeTxn) record(ctx context.Context, action, target, detail string) {
	actor, ip := ActorFrom(ctx)
	w.audit = append(w.audit, AuditEntry{Time: w.now, Actor: actor, Action: action, Target: target, Detail: detail, ClientIP: ip})
}

// then schedules an index change for after the commit.
func (w *writeTxn) then(f func()) { w.after = append(w.after, f) }

// update runs fn in a read-write transaction under the store's write lock,
// writes the audit entries fn recorded, commits (fsync), and then applies
// the index changes. If fn fails nothing is written.
func (s *Badger) update(fn func(w *writeTxn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	w := &writeTxn{txn: txn, now: s.clock.Now()}
	if err := fn(w); err != nil {
		return err
	}
	if err := s.writeAudit(txn, w.audit); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	for _, f := range w.after {
		f()
	}
	return nil
}

// view runs fn in a read-only transaction. It uses TryRLock because the
// only writer of life is Close: a failed try means the store is closing,
// and a plain RLock would deadlock a read nested in fn (for example the
// alert loop reading alert state inside ForEachPermanentToken) while Close
// waits.
func (s *Badger) view(fn func(txn *badger.Txn) error) error {
	if !s.life.TryRLock() {
		return errClosed
	}
	defer s.life.RUnlock()
	if s.db.IsClosed() {
		return errClosed
	}
	return s.db.View(fn)
}

// getValue reads a value; found is false when the key does not exist.
func getValue(txn *badger.Txn, key string) (val []byte, found bool, err error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: read %s: %w", keyKind(key), err)
	}
	val, err = item.ValueCopy(nil)
	if err != nil {
		return nil, false, fmt.Errorf("storage: read %s: %w", keyKind(key), err)
	}
	return val, true, nil
}

// exists reports whether key is present.
func exists(txn *badger.Txn, key string) (bool, error) {
	_, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: read %s: %w", keyKind(key), err)
	}
	return true, nil
}

// scan calls fn for every key with the given prefix, in key order.
func scan(txn *badger.Txn, prefix string, withValues bool, fn func(key, val []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefix)
	opts.PrefetchValues = withValues
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var val []byte
		if withValues {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("storage: read %s: %w", keyKind(prefix), err)
			}
			val = v
		}
		if err := fn(item.Key(), val); err != nil {
			return err
		}
	}
	return nil
}

// keyKind names what a key holds for error messages, without its content.
func keyKind(key string) string {
	for _, p := range []struct{ prefix, name string }{
		{prefixUserToken, "user token index"}, {prefixUser, "user"}, {prefixToken, "token"},
		{prefixName, "token name index"}, {prefixExpiry, "expiry index"}, {prefixLastUsed, "last use"},
		{prefixAlert, "alert state"}, {prefixSetting, "setting"}, {prefixAudit, "audit log"},
	} {
		if len(key) >= len(p.prefix) && key[:len(p.prefix)] == p.prefix {
			return p.name
		}
	}
	return "metadata"
}

// set and del wrap Badger's errors with what was being written.
func set(txn *badger.Txn, key string, val []byte) error {
	if err := txn.Set([]byte(key), val); err != nil {
		return fmt.Errorf("storage: write %s: %w", keyKind(key), err)
	}
	return nil
}

func setEntry(txn *badger.Txn, e *badger.Entry) error {
	if err := txn.SetEntry(e); err != nil {
		return fmt.Errorf("storage: write %s: %w", keyKind(string(e.Key)), err)
	}
	return nil
}

func del(txn *badger.Txn, key string) error {
	if err := txn.Delete([]byte(key)); err != nil {
		return fmt.Errorf("storage: delete %s: %w", keyKind(key), err)
	}
	return nil
}

var _ Store = (*Badger)(nil)
