// Package kv is the contract between the rules of API tokens for Caddy
// (package storage) and a database: ordered keys read, written and scanned
// in serializable transactions, and a change feed that tells every node
// what committed. The Badger backend (storage/badgerstore) is one
// process's embedded database; the PostgreSQL backend (storage/pgstore) is
// shared by a fleet of nodes. A backend imports this package alone, and
// storage/storagetest is the suite that proves it keeps the contract.
package kv

import (
	"context"
	"errors"
	"io"
	"time"
)

// Backend is what the rules need from a database, and all they need.
//
// Keys are byte strings whose layout the rules own (storage/keys.go);
// values are opaque bytes. Scans return keys in byte order. A backend that
// needs bookkeeping of its own keeps it out of this keyspace: no Reader
// ever returns it, so copying a database key by key never carries it.
type Backend interface {
	// View runs fn in a read-only transaction that sees one consistent
	// snapshot of the data.
	View(ctx context.Context, fn func(Reader) error) error

	// Update runs fn in a read-write transaction and commits it durably:
	// once Update returns nil the change survives a crash of the process
	// and of the machine. Transactions are serializable. A backend may run
	// fn more than once (to retry after losing a conflict with another
	// node), so fn must act only through w and must not keep what it read
	// from an attempt that failed.
	//
	// The changes fn publishes (Writer.Publish) are delivered to the
	// subscriber in the same transaction's order, and Update returns only
	// after the subscriber has applied them, so the writer sees its own
	// change in memory as soon as the call returns.
	Update(ctx context.Context, fn func(w Writer) error) error

	// Subscribe starts the change feed: the subscriber gets a full
	// snapshot (Reset), then every change committed after it by any
	// writer (Apply), and a new Reset whenever the feed cannot guarantee
	// that no change was missed. It returns after the first Reset. It is
	// called once, before Update.
	Subscribe(ctx context.Context, sub Subscriber) error

	// Close stops the feed and releases the database.
	Close() error
}

// Reader reads inside a transaction. Values passed to a callback are valid
// only during the call; copy them to keep them.
type Reader interface {
	// Get returns the value of key; found is false if it does not exist.
	Get(key string) (val []byte, found bool, err error)
	// GetMany calls fn with the value of every key of keys that exists,
	// in any order, with its position in keys.
	GetMany(keys []string, fn func(i int, val []byte) error) error
	// Scan calls fn for the keys with the given prefix in the range and
	// order o says, until fn returns an error. ErrStopScan stops the scan
	// without an error.
	Scan(prefix string, o ScanOptions, fn func(key, val []byte) error) error
}

// ExpiryScanner is a Reader that also tells when each key it scans
// expires (the zero time: never), so a copy keeps the keys' TTLs. The
// Readers of both backends have it.
type ExpiryScanner interface {
	ScanExpiry(prefix string, o ScanOptions, fn func(key, val []byte, expiresAt time.Time) error) error
}

// ScanOptions narrow a scan. Zero values mean the whole prefix in
// ascending order, with values.
type ScanOptions struct {
	// From is the first key to visit (the last, when Reverse): keys before
	// it (after it, when Reverse) are skipped. "" means the start (end) of
	// the prefix.
	From string
	// To, when not "", ends an ascending scan before this key.
	To string
	// Reverse visits keys in descending order.
	Reverse bool
	// KeysOnly passes nil values, which is cheaper.
	KeysOnly bool
}

// ErrStopScan, returned by a scan callback, ends the scan early without
// an error.
var ErrStopScan = errors.New("kv: stop scan")

// Writer is a read-write transaction.
type Writer interface {
	Reader
	// Set writes key. With a ttl > 0 the backend may delete the key once
	// ttl has passed, never before (the rules never rely on the deletion:
	// it only collects garbage); ttl 0 keeps it until deleted.
	Set(key string, val []byte, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key string) error
	// NextSeq returns a number that no other call returns, in this
	// process or any other on the same database, now or after a restart.
	// The numbers one caller gets grow, within a transaction and from one
	// of its transactions to its next; concurrent transactions' numbers
	// may interleave.
	NextSeq() (uint64, error)
	// Publish records, in this transaction, that key changed: when the
	// transaction commits, every subscriber of the feed (on every node)
	// is told the key's new value. hint travels with the change; the
	// rules use it to find what a deleted key stood for.
	Publish(key string, hint []byte)
}

// Subscriber receives the change feed.
type Subscriber interface {
	// Reset replaces everything the subscriber knows with the snapshot r.
	// r may be used by several goroutines at once when concurrent is
	// true.
	Reset(r Reader, concurrent bool) error
	// Apply delivers the current value of keys that changed, after every
	// change a previous Apply or Reset delivered. The same key may appear
	// more than once; the last occurrence is the newest.
	Apply(changes []Change)
}

// Change is one changed key as the feed delivers it: its value when the
// change was read (Found false: the key is gone) and the hint it was
// published with.
type Change struct {
	Key   string
	Hint  []byte
	Value []byte
	Found bool
}

// ErrUnavailable marks a failure to reach the database: the request may
// succeed if retried later. The admin API answers it with 503.
var ErrUnavailable = errors.New("the token database is unavailable")

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("storage: the store is closed")

// SyncStatus describes how current a node's view of a shared database
// is. Backends that are the only writer of their data are always in sync.
type SyncStatus struct {
	// Connected is whether the change feed is connected now.
	Connected bool
	// LastSync is when the node last confirmed it had applied every
	// committed change.
	LastSync time.Time
	// Changes counts the changes applied from the feed.
	Changes uint64
	// FullReloads counts the times the node reloaded everything because
	// it could no longer read the changes it missed.
	FullReloads uint64
}

// Syncer is implemented by backends shared by several nodes.
type Syncer interface {
	SyncStatus() SyncStatus
}

// CatchUpper is implemented by backends shared by several nodes: CatchUp
// returns once the change feed has applied everything committed before
// the call, reading the database at once for it; AwaitFeed does the same
// without a read of its own, by waiting for the feed's next one.
type CatchUpper interface {
	CatchUp(ctx context.Context) error
	AwaitFeed(ctx context.Context) error
}

// Backuper is implemented by backends that can write a consistent snapshot
// of everything they hold while they keep serving (Badger). A PostgreSQL
// database is backed up with PostgreSQL's own tools instead.
type Backuper interface {
	// Backup writes a full snapshot of the database to w.
	Backup(w io.Writer) error
}

// PrefixEnd is the first key after every key with the given prefix, for
// an ascending scan's To; "" if there is none (a prefix of 0xff bytes).
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}
