package alerts

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// Shared is the part of the alert machinery that outlives one config
// generation. The app keeps a single Shared for as long as the store is open
// and hands it to every Loop it creates, so that during a reload, when the
// old and the new config run side by side:
//
//   - only one pass acts at a time (passes are serialized on one lock, and
//     each pass re-reads the notification records the previous one wrote),
//   - the email counters keep counting instead of restarting at zero,
//   - GET /faults and /metrics keep showing the last pass's results,
//   - an SMTP outage's retry backoff is not reset by the reload,
//   - the alert lease stays with this node.
//
// All loops over one store must share one Shared. Across the nodes of a
// fleet, the lease picks the one node whose loop runs passes; every node
// shows the last pass's results, which the store shares (the alert view).
type Shared struct {
	store Store
	// holder names this node as a lease holder: host, process and a
	// random part, so a restarted process is a new holder.
	holder string

	// pass is a one-slot semaphore held for the whole of a pass. A channel,
	// not a mutex, so that waiting for it can be abandoned on Stop.
	pass chan struct{}

	sent, failed atomic.Uint64

	mu   sync.RWMutex
	view *view // nil until a pass of any node has finished

	// lease is the alert lease while this node holds it.
	leaseMu sync.Mutex
	lease   storage.Lease
	leading atomic.Bool

	// retry is the SMTP backoff state; guarded by pass.
	retry retryState

	loopsMu sync.Mutex
	loops   map[*Loop]struct{} // started and not stopped
}

// NewShared returns the Shared of store: it follows the alert view that
// passes store there (this node's or another's).
func NewShared(ctx context.Context, store Store) (*Shared, error) {
	host, _ := os.Hostname()
	s := &Shared{
		store:  store,
		holder: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8]),
		pass:   make(chan struct{}, 1),
		loops:  map[*Loop]struct{}{},
	}
	if err := store.WatchAlertView(ctx, s.loadView); err != nil {
		return nil, fmt.Errorf("reading the last alert pass: %w", err)
	}
	return s, nil
}

// Trigger asks every running loop on this Shared for a pass now. Hand it
// to whatever learns of setting changes (the store's OnSettingsChange,
// which hears of every node's changes): unlike Loop.Trigger it reaches the
// loop of whichever config generation is running. It never blocks.
func (s *Shared) Trigger() {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	for l := range s.loops {
		l.Trigger()
	}
}

func (s *Shared) register(l *Loop) {
	s.loopsMu.Lock()
	s.loops[l] = struct{}{}
	s.loopsMu.Unlock()
}

// unregister removes l and reports whether it was the last running loop.
func (s *Shared) unregister(l *Loop) (last bool) {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	delete(s.loops, l)
	return len(s.loops) == 0
}

// view is what one pass found, as every node shows it. It is replaced
// whole, never mutated, so readers (the collector, GET /faults) see one
// consistent pass.
type view struct {
	FinishedAt       time.Time       `json:"finished_at"`
	IntervalSeconds  float64         `json:"interval_seconds"`
	NotificationDays int             `json:"notification_days"`
	Faults           []storage.Fault `json:"faults"`
	// Expiring are the active permanent tokens inside the metrics
	// horizon, soonest first: the per-token expiry series.
	Expiring []expiring `json:"expiring"`
	// Within counts the active permanent tokens expiring within each of
	// expiryBuckets.
	Within []int `json:"within"`
}

// expiring is one per-token expiry series.
type expiring struct {
	User    string `json:"user"`
	Token   string `json:"token"`
	TokenID string `json:"token_id"`
	Expires int64  `json:"expires"` // Unix seconds
}

// loadView takes a view stored by a pass; a view it cannot read is
// ignored (the next pass stores a good one).
func (s *Shared) loadView(b []byte) {
	if len(b) == 0 {
		return
	}
	var v view
	if err := json.Unmarshal(b, &v); err != nil {
		return
	}
	s.mu.Lock()
	s.view = &v
	s.mu.Unlock()
}

// retryState remembers SMTP failures so that retries back off.
type retryState struct {
	failures int
	next     time.Time  // no send attempt before this time
	smtp     SMTPConfig // the SMTP settings that failed; new ones retry at once
}

// Faults returns the faults found by the last finished pass of any node,
// soonest expiry first. It is never nil, so it encodes as a JSON array.
func (s *Shared) Faults() []storage.Fault {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.view == nil {
		return []storage.Fault{}
	}
	return slices.Clone(s.view.Faults)
}

// EmailsSent counts the digest emails the SMTP server accepted since the
// Shared was made.
func (s *Shared) EmailsSent() uint64 { return s.sent.Load() }

// EmailsFailed counts the digest emails that failed since the Shared was
// made (each failed attempt counts once; retries are new attempts).
func (s *Shared) EmailsFailed() uint64 { return s.failed.Load() }

// Leading reports whether this node holds the alert lease.
func (s *Shared) Leading() bool { return s.leading.Load() }

func (s *Shared) current() *view {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.view
}

// acquire waits for the pass lock, or gives up when ctx ends.
func (s *Shared) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // select would pick at random when both are ready
	}
	select {
	case s.pass <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Shared) release() { <-s.pass }

// Lease timing. A leader renews every leaseRenew; a lease it stops renewing
// (it died, or lost the database) expires after leaseTTL, and the other
// nodes try to take it every leaseRenew, so the lead passes on within
// leaseTTL + leaseRenew: 25s, inside the 30s the fleet promises.
const (
	leaseName  = "alerts"
	leaseTTL   = 20 * time.Second
	leaseRenew = 5 * time.Second
)

// lead takes or renews the alert lease and reports whether this node
// holds it.
func (s *Shared) lead(ctx context.Context) (storage.Lease, bool, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	l, ok, err := s.store.AcquireLease(ctx, leaseName, s.holder, leaseTTL)
	if err != nil {
		// Unknown: keep the lease we had, if any; its fenced writes fail
		// once it has expired.
		return s.lease, s.leading.Load(), err
	}
	if ok {
		s.lease = l
	}
	s.leading.Store(ok)
	return l, ok, nil
}

// resign gives the lease up, so another node takes over at once rather
// than after it expires.
func (s *Shared) resign(ctx context.Context) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if !s.leading.Swap(false) {
		return nil
	}
	return s.store.ReleaseLease(ctx, s.lease)
}
