// Package alerts watches permanent API tokens for coming expiry. A Loop
// runs a pass every alert interval (and at once when triggered after a
// setting change); each pass streams the permanent tokens from the store,
// raises a fault for each token inside the largest notification threshold
// (or expired and not yet deleted), publishes the faults and metrics, and
// emails one digest of the tokens that newly crossed a threshold.
//
// Emails are sent at most once per token and threshold: the tightest
// threshold emailed is recorded in the store after a successful send, and
// passes are serialized through the Shared that all loops over one store
// use, so a restart, a reload or two overlapping loops never repeat one.
// SMTP delivery itself is at-least-once: if the connection drops after the
// server took the message but before it confirmed it, the digest is sent
// again on a later pass, which is better than losing it.
//
// The package knows nothing of Caddy. The api_tokens app wires it so:
//
//   - one Shared per open store, kept with the store across reloads
//     (NewShared when the store is opened);
//   - at Provision, NewMailer(SMTPConfig) if an smtp block is configured
//     (its error is a config error), then NewLoop(Config{...});
//   - Loop.Start in the app's Start, Loop.Stop in its Stop;
//   - Shared.Trigger as the admin API's OnSettingsChange, Shared.Faults as
//     its Faults;
//   - Shared.Collector registered on each config's metrics registry
//     (ctx.GetMetricsRegistry, a new pedantic registry per config load);
//     every generation's collector reads the same Shared, so the counters
//     carry on across reloads.
package alerts

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// Timing of the loop.
const (
	// DefaultInterval is the alert interval when the config sets none.
	DefaultInterval = time.Hour
	// retryBase is the first SMTP retry delay; it doubles per failure up to
	// max(1 minute, interval).
	retryBase = 10 * time.Second
	// minWait keeps a misbehaving clock from spinning the loop.
	minWait = time.Second
	// errorWait bounds the wait after a pass that failed on storage.
	errorWait = time.Minute
)

// Store is what the alert loop needs from storage; *storage.Store has it.
type Store interface {
	ForEachPermanentToken(ctx context.Context, fn func(storage.Token) error) error
	GetSetting(ctx context.Context, key string) (string, error)
	GetAlertState(ctx context.Context, tokenID string) (storage.AlertState, bool, error)
	PutAlertStates(ctx context.Context, states map[string]storage.AlertState) error
	CountTokens() map[storage.TokenKind]int
}

// Config is what a Loop needs. Store and Shared are required.
type Config struct {
	Store Store
	// Clock defaults to storage.SystemClock.
	Clock storage.Clock
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Interval between passes; DefaultInterval when zero.
	Interval time.Duration
	// Mailer sends the digests; nil means no SMTP is configured, and then
	// faults and metrics still work but nothing is sent or marked as sent.
	Mailer *Mailer
	// Shared is kept by the app across config reloads (see Shared).
	Shared *Shared
}

// Loop runs alert passes in one goroutine between Start and Stop. A Loop
// is started at most once; a config reload makes a new Loop with the same
// Shared.
type Loop struct {
	cfg     Config
	trigger chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	warnNoSMTP sync.Once
	passes     atomic.Int64 // finished passes, for tests
}

// NewLoop returns a Loop that is not running yet. It panics if Store or
// Shared is missing, which is a programming error in the caller.
func NewLoop(cfg Config) *Loop {
	if cfg.Store == nil || cfg.Shared == nil {
		panic("alerts: Config needs Store and Shared")
	}
	if cfg.Clock == nil {
		cfg.Clock = storage.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	return &Loop{cfg: cfg, trigger: make(chan struct{}, 1)}
}

// Start runs the first pass at once, then one every interval, in a new
// goroutine. Calling it again does nothing.
func (l *Loop) Start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	l.cfg.Shared.register(l)
	go l.run(ctx, l.done)
}

// Stop ends the loop and waits for its goroutine to return. A pass in
// progress is cut short: an email being sent is abandoned (its tokens stay
// pending for the next loop). Stop is safe to call more than once, and
// before Start.
func (l *Loop) Stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if done == nil {
		return
	}
	l.cfg.Shared.unregister(l)
	cancel()
	<-done
}

// Trigger asks the running loop for a pass now, for example after a
// notification setting changed. It never blocks; triggers that arrive
// during a pass fold into one more pass.
func (l *Loop) Trigger() {
	select {
	case l.trigger <- struct{}{}:
	default:
	}
}

// RunOnce runs one pass now, waiting for any other loop's pass on the same
// Shared to finish first. It returns an error when the pass could not read
// the store, when ctx ended, or when sending the digest failed (the failure
// is counted, and the tokens stay pending for a retry).
func (l *Loop) RunOnce(ctx context.Context) error {
	_, err := l.pass(ctx)
	return err
}

func (l *Loop) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		wait, err := l.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.cfg.Logger.Error("alert pass failed", zap.Error(err), zap.Duration("next_pass_in", wait))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-l.trigger:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// pass runs one pass under the Shared lock and returns how long to wait
// before the next one.
func (l *Loop) pass(ctx context.Context) (time.Duration, error) {
	sh := l.cfg.Shared
	if err := sh.acquire(ctx); err != nil {
		return 0, err
	}
	defer sh.release()

	now := l.cfg.Clock.Now()
	set, invalid, err := readSettings(ctx, l.cfg.Store)
	if err != nil {
		return min(l.cfg.Interval, errorWait), err
	}
	if invalid != nil {
		l.cfg.Logger.Error("ignoring an invalid notification setting; fix it with PUT /settings/{key}", zap.Error(invalid))
	}
	var prev *expiryTable
	if last := sh.current(); last != nil {
		prev = last.expiry
	}
	sc, err := scanTokens(ctx, l.cfg.Store, now, set, prev)
	if err != nil {
		return min(l.cfg.Interval, errorWait), err
	}
	retryIn, sendErr := l.notify(ctx, now, set.recipients, sc)
	sh.publish(&snapshot{
		finishedAt:       l.cfg.Clock.Now(),
		interval:         l.cfg.Interval,
		notificationDays: set.largest(),
		faults:           sc.faults,
		countTokens:      l.cfg.Store.CountTokens,
		expiry:           sc.expiry,
	})
	l.cfg.Logger.Debug("alert pass finished", zap.Int("faults", len(sc.faults)),
		zap.Int("active_permanent_tokens", sc.expiry.len()), zap.Int("emailed_tokens", len(sc.notices)))

	l.passes.Add(1)
	wait := l.cfg.Interval
	if retryIn > 0 {
		wait = min(wait, retryIn)
	}
	return max(wait, minWait), sendErr
}

// notify emails the digest of sc.notices when it is due, and records the
// notified thresholds once the SMTP server accepted it. retryIn > 0 asks
// for an earlier next pass: a retry after a failure, or the rest of a digest
// that was too long for one email.
func (l *Loop) notify(ctx context.Context, now time.Time, recipients []string, sc *scan) (retryIn time.Duration, err error) {
	if len(sc.notices) == 0 {
		return 0, nil
	}
	if l.cfg.Mailer == nil {
		l.warnNoSMTP.Do(func() {
			l.cfg.Logger.Warn("tokens are due an expiry email but no smtp server is configured; nothing is sent",
				zap.Int("tokens", len(sc.notices)+sc.overdue))
		})
		return 0, nil
	}
	r := &l.cfg.Shared.retry
	if r.mailer == l.cfg.Mailer && now.Before(r.next) {
		return r.next.Sub(now), nil // backing off after a failure
	}
	msg := composeDigest(now, sc.notices, sc.overdue)
	if err := l.cfg.Mailer.Send(ctx, recipients, msg.subject, msg.body); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err() // stopping; not the SMTP server's fault
		}
		l.cfg.Shared.failed.Add(1)
		r.failures++
		r.mailer = l.cfg.Mailer
		delay := retryDelay(r.failures, l.cfg.Interval)
		r.next = now.Add(delay)
		return delay, fmt.Errorf("sending the expiry email for %d tokens failed (%d in a row; retrying in %s, the tokens stay pending): %w",
			len(sc.notices), r.failures, delay, err)
	}
	l.cfg.Shared.sent.Add(1)
	*r = retryState{}
	// Record even if Stop was called meanwhile: the email is out, and a
	// missing record would send it again after the reload.
	if err := l.cfg.Store.PutAlertStates(context.WithoutCancel(ctx), notifiedStates(sc.notices)); err != nil {
		return 0, fmt.Errorf("the expiry email was sent but recording it failed, so it may be sent again: %w", err)
	}
	l.cfg.Logger.Info("sent token expiry email", zap.Int("tokens", len(sc.notices)), zap.Int("recipients", len(recipients)))
	if sc.overdue > 0 {
		return retryBase, nil
	}
	return 0, nil
}

// notifiedStates records, for each emailed token, the threshold it was
// warned at.
func notifiedStates(notices []notice) map[string]storage.AlertState {
	states := make(map[string]storage.AlertState, len(notices))
	for _, n := range notices {
		states[n.fault.TokenID] = storage.AlertState{NotifiedDays: n.threshold, RaisedAt: n.fault.RaisedAt}
	}
	return states
}

// retryDelay is the exponential backoff after the given number of
// consecutive SMTP failures, capped at max(1 minute, interval).
func retryDelay(failures int, interval time.Duration) time.Duration {
	limit := max(time.Minute, interval)
	d := retryBase
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
