// Package storagetest is the contract that every kv.Backend keeps, as a
// test suite: reads and writes in transactions, scans in both directions
// with prefixes and bounds, TTLs, NextSeq, serializable updates that never
// lose a write, and a change feed that delivers every commit once and in
// order, subscribe first and catch up after. A backend's own tests call
// Run with a Harness; a backend that passes it is one the rules of
// package storage can run on (storage's own tests then run every rule on
// it too).
package storagetest

import (
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// Harness makes the databases the suite tests on.
type Harness struct {
	// NewDatabase makes a new, empty database for one test.
	NewDatabase func(t *testing.T) Database
	// Fleet says that several handles may be open on one database at
	// once, as the nodes of a fleet are, each with its own change feed.
	Fleet bool
	// ExpiryWithin is how long after its TTL a key is gone at the latest.
	ExpiryWithin time.Duration
}

// Database is one database of the backend under test.
type Database struct {
	// Open opens a handle on the database, subscribes sub to its change
	// feed, and closes the handle when the test ends. Without Fleet, a
	// handle is opened only once the last one is closed.
	Open func(t *testing.T, sub kv.Subscriber) kv.Backend
	// PruneChanges, for a Fleet backend, makes every change committed
	// so far unreadable by the feeds, as a backend's maintenance does with
	// old ones: a handle whose feed has not read them must reload
	// everything (Subscriber.Reset).
	PruneChanges func(t *testing.T)
}

// Run runs the whole contract on the backend h makes.
func Run(t *testing.T, h Harness) {
	t.Run("ReadsAndWrites", func(t *testing.T) { testReadsAndWrites(t, h) })
	t.Run("FailedUpdateWritesNothing", func(t *testing.T) { testFailedUpdateWritesNothing(t, h) })
	t.Run("GetMany", func(t *testing.T) { testGetMany(t, h) })
	t.Run("ScanOrderAndPrefixes", func(t *testing.T) { testScanOrderAndPrefixes(t, h) })
	t.Run("ScanBounds", func(t *testing.T) { testScanBounds(t, h) })
	t.Run("ScanManyKeys", func(t *testing.T) { testScanManyKeys(t, h) })
	t.Run("ScanStopsEarly", func(t *testing.T) { testScanStopsEarly(t, h) })
	t.Run("TTL", func(t *testing.T) { testTTL(t, h) })
	t.Run("ScanExpiry", func(t *testing.T) { testScanExpiry(t, h) })
	t.Run("NextSeq", func(t *testing.T) { testNextSeq(t, h) })
	t.Run("NextSeqAfterReopen", func(t *testing.T) { testNextSeqAfterReopen(t, h) })
	t.Run("SerializableUpdates", func(t *testing.T) { testSerializableUpdates(t, h) })
	t.Run("OnlyTheRulesKeys", func(t *testing.T) { testOnlyTheRulesKeys(t, h) })
	t.Run("PublishDeliveredOnceInOrder", func(t *testing.T) { testPublishDeliveredOnceInOrder(t, h) })
	t.Run("SubscribeThenCatchUp", func(t *testing.T) { testSubscribeThenCatchUp(t, h) })
	t.Run("ClosedHandle", func(t *testing.T) { testClosedHandle(t, h) })
	if h.Fleet {
		t.Run("FeedReachesEveryHandle", func(t *testing.T) { testFeedReachesEveryHandle(t, h) })
		t.Run("FeedKeepsCommitOrderAcrossHandles", func(t *testing.T) { testFeedKeepsCommitOrderAcrossHandles(t, h) })
		t.Run("ResetAfterPrunedChanges", func(t *testing.T) { testResetAfterPrunedChanges(t, h) })
	}
}
