// Package badgerstore is the embedded storage backend of API tokens for
// Caddy: a Badger database in one directory, used by one process. It is
// the default; a fleet of gateways shares a PostgreSQL database instead
// (storage/pgstore).
//
// Its change feed is in-process: Update applies the changes it committed
// to the subscriber before it returns, under the same lock that orders
// the commits, so the subscriber never sees them out of order.
package badgerstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// lockFileName is our own advisory lock, taken before Badger opens, so a
// second process gets a clear message instead of Badger's.
const lockFileName = "api_tokens.lock"

// The backend's own bookkeeping lives under privatePrefix, which no key
// of the rules starts with (they all start with a letter): Scan skips it
// and Get never returns it, so it stays out of the rules' keyspace and a
// copy into another database never carries it; a backup of the directory
// does. keySeq holds the last number NextSeq handed out, so numbers keep
// growing across restarts.
const (
	privatePrefix = "\x00badger/"
	keySeq        = privatePrefix + "seq"
)

// Backend is a kv.Backend on a Badger database in one directory.
type Backend struct {
	db   *badger.DB
	lock *os.File
	dir  string

	// mu serializes every Update: the transaction, its commit (fsync) and
	// the delivery of its changes to the subscriber happen as one step,
	// so concurrent creates have exactly one winner and the subscriber
	// sees changes in commit order.
	mu     sync.Mutex
	closed bool
	seq    uint64 // last NextSeq; guarded by mu
	sub    kv.Subscriber

	// life lets Close wait for reads in flight: reads hold it shared,
	// Close takes it exclusively before closing Badger.
	life sync.RWMutex
}

// Open opens (or creates) the Badger database in dir.
func Open(dir string, log *zap.Logger) (*Backend, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create storage directory %s: %w", dir, err)
	}
	if err := makePrivate(dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(dir, log))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("cannot open storage directory %s: %w", dir, err)
	}
	b := &Backend{db: db, lock: lock, dir: dir}
	if err := makePrivate(dir); err != nil { // the files badger.Open created
		b.Close()
		return nil, err
	}
	if err := b.loadSeq(); err != nil {
		b.Close()
		return nil, fmt.Errorf("cannot load storage directory %s: %w", dir, err)
	}
	return b, nil
}

func (b *Backend) loadSeq() error {
	return b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keySeq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return errors.New("storage: corrupt audit sequence")
			}
			b.seq = binary.BigEndian.Uint64(v)
			return nil
		})
	})
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
// by Backend.mu), and caches stay small because requests are verified
// from memory, never from here.
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

// Close closes the database. Calling it again does nothing.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.life.Lock() // waits for reads in flight; new ones fail fast
	defer b.life.Unlock()
	err := b.db.Close()
	if perr := makePrivate(b.dir); err == nil { // the tables Close flushed
		err = perr
	}
	if lerr := b.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// Subscribe loads the whole database into sub. Later changes reach it from
// Update, which is the only writer.
func (b *Backend) Subscribe(ctx context.Context, sub kv.Subscriber) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sub = sub
	return b.View(ctx, func(r kv.Reader) error { return sub.Reset(r, true) })
}

// View runs fn in a read-only Badger transaction. It uses TryRLock because
// the only writer of life is Close: a failed try means the store is
// closing, and a plain RLock would deadlock a read nested in fn while
// Close waits.
func (b *Backend) View(_ context.Context, fn func(kv.Reader) error) error {
	if !b.life.TryRLock() {
		return kv.ErrClosed
	}
	defer b.life.RUnlock()
	if b.db.IsClosed() {
		return kv.ErrClosed
	}
	return b.db.View(func(txn *badger.Txn) error { return fn(reader{txn: txn, db: b.db}) })
}

// Update runs fn in a read-write transaction under the write lock,
// commits it (fsync) and hands the published changes to the subscriber.
func (b *Backend) Update(_ context.Context, fn func(kv.Writer) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return kv.ErrClosed
	}
	txn := b.db.NewTransaction(true)
	defer txn.Discard()
	w := &writer{reader: reader{txn: txn, db: b.db}, seq: b.seq}
	if err := fn(w); err != nil {
		return err
	}
	if w.seq != b.seq {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], w.seq)
		if err := w.Set(keySeq, v[:], 0); err != nil {
			return err
		}
	}
	changes, err := w.changes()
	if err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	b.seq = w.seq
	if len(changes) > 0 && b.sub != nil {
		b.sub.Apply(changes)
	}
	return nil
}

// reader is a kv.Reader over a Badger transaction.
type reader struct {
	txn *badger.Txn
	db  *badger.DB
}

func (r reader) Get(key string) ([]byte, bool, error) {
	if strings.HasPrefix(key, privatePrefix) {
		return nil, false, nil
	}
	item, err := r.txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	val, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return val, true, nil
}

// GetMany reads the keys one by one: Badger's point reads are local.
func (r reader) GetMany(keys []string, fn func(int, []byte) error) error {
	for i, k := range keys {
		val, found, err := r.Get(k)
		if err != nil {
			return err
		}
		if found {
			if err := fn(i, val); err != nil {
				return err
			}
		}
	}
	return nil
}

// Scan iterates the prefix. Several goroutines may scan one read-only
// transaction at once (Subscribe's load does).
func (r reader) Scan(prefix string, o kv.ScanOptions, fn func(key, val []byte) error) error {
	return r.ScanExpiry(prefix, o, func(key, val []byte, _ time.Time) error { return fn(key, val) })
}

// ScanExpiry is Scan telling each key's expiry too (kv.ExpiryScanner), to
// the second Badger keeps.
func (r reader) ScanExpiry(prefix string, o kv.ScanOptions, fn func(key, val []byte, expiresAt time.Time) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Reverse = o.Reverse
	opts.PrefetchValues = !o.KeysOnly
	if !o.Reverse {
		opts.Prefix = []byte(prefix)
	}
	it := r.txn.NewIterator(opts)
	defer it.Close()
	start := []byte(prefix)
	if o.From != "" {
		start = []byte(o.From)
	} else if o.Reverse {
		start = []byte(kv.PrefixEnd(prefix))
		if len(start) == 0 { // a prefix of 0xff bytes: start past every key
			start = []byte("\xff\xff\xff\xff\xff\xff\xff\xff")
		}
	}
	var to []byte
	if o.To != "" && !o.Reverse {
		to = []byte(o.To)
	}
	it.Seek(start)
	if o.Reverse && o.From == "" && it.Valid() && !bytes.HasPrefix(it.Item().Key(), []byte(prefix)) {
		it.Next() // on the first key after the prefix itself
	}
	for ; it.Valid(); it.Next() {
		item := it.Item()
		key := item.Key()
		if !bytes.HasPrefix(key, []byte(prefix)) || to != nil && bytes.Compare(key, to) >= 0 {
			return nil
		}
		if bytes.HasPrefix(key, []byte(privatePrefix)) {
			continue
		}
		var expiresAt time.Time
		if e := item.ExpiresAt(); e != 0 {
			expiresAt = time.Unix(int64(e), 0)
		}
		var err error
		if o.KeysOnly {
			err = fn(key, nil, expiresAt)
		} else {
			err = item.Value(func(val []byte) error { return fn(key, val, expiresAt) })
		}
		if errors.Is(err, kv.ErrStopScan) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CountHint estimates the number of keys under prefix from Badger's table
// statistics, so the verifier's maps are allocated once at the right size
// instead of growing a million entries step by step. Tables that straddle
// the prefix count half.
func (r reader) CountHint(prefix string) int {
	lo, hi := []byte(prefix), []byte(prefix+"\xff")
	var n uint64
	for _, t := range r.db.Tables() {
		if bytes.Compare(t.Right, lo) < 0 || bytes.Compare(t.Left, hi) > 0 {
			continue
		}
		if bytes.HasPrefix(t.Left, lo) && bytes.HasPrefix(t.Right, lo) {
			n += uint64(t.KeyCount)
		} else {
			n += uint64(t.KeyCount) / 2
		}
	}
	return int(min(n, 1<<26))
}

// writer is a kv.Writer over a read-write Badger transaction.
type writer struct {
	reader
	seq       uint64
	published []publication
}

type publication struct {
	key  string
	hint []byte
}

func (w *writer) Set(key string, val []byte, ttl time.Duration) error {
	e := badger.NewEntry([]byte(key), val)
	if ttl > 0 {
		// Badger keeps expiry in whole seconds and WithTTL rounds down,
		// which could collect a key up to a second before its TTL: round
		// up instead.
		e.ExpiresAt = uint64(time.Now().Add(ttl).Unix()) + 1
	}
	return w.txn.SetEntry(e)
}

func (w *writer) Delete(key string) error {
	return w.txn.Delete([]byte(key))
}

func (w *writer) NextSeq() (uint64, error) {
	w.seq++
	return w.seq, nil
}

func (w *writer) Publish(key string, hint []byte) {
	w.published = append(w.published, publication{key, hint})
}

// changes reads the final value, in this transaction, of every published
// key, once each, in the order they were first published.
func (w *writer) changes() ([]kv.Change, error) {
	seen := make(map[string]bool, len(w.published))
	var out []kv.Change
	for _, p := range w.published {
		if seen[p.key] {
			continue
		}
		seen[p.key] = true
		val, found, err := w.Get(p.key)
		if err != nil {
			return nil, fmt.Errorf("badger: read a published key: %w", err)
		}
		out = append(out, kv.Change{Key: p.key, Hint: p.hint, Value: val, Found: found})
	}
	return out, nil
}

// Interface guards
var (
	_ kv.Backend = (*Backend)(nil)
	_ kv.Writer  = (*writer)(nil)
)
