package alerts

import (
	"context"
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
//   - an SMTP outage's retry backoff is not reset by the reload.
//
// All loops over one store must share one Shared.
type Shared struct {
	// pass is a one-slot semaphore held for the whole of a pass. A channel,
	// not a mutex, so that waiting for it can be abandoned on Stop.
	pass chan struct{}

	sent, failed atomic.Uint64

	mu   sync.RWMutex
	snap *snapshot // nil until the first pass finishes

	// retry is the SMTP backoff state; guarded by pass.
	retry retryState

	loopsMu sync.Mutex
	loops   map[*Loop]struct{} // started and not stopped
}

// NewShared returns an empty Shared: no pass has run yet.
func NewShared() *Shared {
	return &Shared{pass: make(chan struct{}, 1), loops: map[*Loop]struct{}{}}
}

// Trigger asks every running loop on this Shared for a pass now. Hand it
// to whatever learns of setting changes (the admin API's OnSettingsChange):
// unlike Loop.Trigger it reaches the loop of whichever config generation is
// running. It never blocks.
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

func (s *Shared) unregister(l *Loop) {
	s.loopsMu.Lock()
	delete(s.loops, l)
	s.loopsMu.Unlock()
}

// snapshot is what one pass found. It is replaced whole, never mutated, so
// readers (the collector, GET /faults) see one consistent pass.
type snapshot struct {
	finishedAt       time.Time
	interval         time.Duration
	notificationDays int
	faults           []storage.Fault
	// countTokens reads the live token counts at scrape time: they are
	// kept in memory by the store, so they need not wait for a pass.
	countTokens func() map[storage.TokenKind]int
	expiry      *expiryTable
}

// retryState remembers SMTP failures so that retries back off.
type retryState struct {
	failures int
	next     time.Time // no send attempt before this time
	mailer   *Mailer   // the mailer that failed; a new SMTP config retries at once
}

// Faults returns the faults found by the last finished pass, soonest expiry
// first. It is never nil, so it encodes as a JSON array.
func (s *Shared) Faults() []storage.Fault {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.snap == nil {
		return []storage.Fault{}
	}
	return slices.Clone(s.snap.faults)
}

// EmailsSent counts the digest emails the SMTP server accepted since the
// Shared was made.
func (s *Shared) EmailsSent() uint64 { return s.sent.Load() }

// EmailsFailed counts the digest emails that failed since the Shared was
// made (each failed attempt counts once; retries are new attempts).
func (s *Shared) EmailsFailed() uint64 { return s.failed.Load() }

func (s *Shared) current() *snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.snap
}

func (s *Shared) publish(snap *snapshot) {
	s.mu.Lock()
	s.snap = snap
	s.mu.Unlock()
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
