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
// In a fleet of nodes on one database, only the node holding the alert
// lease runs passes, and its writes are fenced by the lease; the pass's
// results are stored, so every node shows the same faults and metrics.
// SMTP delivery itself is at-least-once: if the connection drops after the
// server took the message but before it confirmed it (or the sender loses
// its lease in between), the digest is sent again on a later pass, which
// is better than losing it.
//
// The package knows nothing of Caddy. The api_tokens app wires it so:
//
//   - one Shared per open store, kept with the store across reloads
//     (NewShared when the store is opened), and Shared.Trigger as the
//     store's OnSettingsChange, which hears of every node's changes;
//   - at Provision, NewMailer(SMTPConfig) if an smtp block is configured
//     (its error is a config error), then NewLoop(Config{...});
//   - Loop.Start in the app's Start, Loop.Stop in its Stop;
//   - Shared.Faults as the admin API's Faults;
//   - Shared.Collector registered on each config's metrics registry
//     (ctx.GetMetricsRegistry, a new pedantic registry per config load);
//     every generation's collector reads the same Shared, so the counters
//     carry on across reloads.
package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
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

// Store is what the alert loop needs from storage; storage.Alerting has it.
type Store interface {
	ForEachPermanentToken(ctx context.Context, fn func(storage.Token) error) error
	GetSetting(ctx context.Context, key string) (string, error)
	GetAlertStates(ctx context.Context, ids []string) (map[string]storage.AlertState, error)
	PutAlertStates(ctx context.Context, l storage.Lease, states map[string]storage.AlertState) error
	PutAlertView(ctx context.Context, l storage.Lease, view []byte) error
	WatchAlertView(ctx context.Context, fn func(view []byte)) error
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (storage.Lease, bool, error)
	ReleaseLease(ctx context.Context, l storage.Lease) error
	CountTokens() map[storage.TokenKind]int
	SyncStatus() (kv.SyncStatus, bool)
}

// Config is what a Loop needs. Shared is required; the store is the
// Shared's.
type Config struct {
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
	// MaxDigestTokens bounds one digest email, and what a pass holds in
	// memory for it: tokens past it stay pending and go out in the next
	// digest, which the loop sends soon after. Default 1000.
	MaxDigestTokens int
}

// Loop runs alert passes in one goroutine between Start and Stop, while
// this node holds the alert lease; another goroutine keeps taking or
// renewing the lease. A Loop is started at most once; a config reload
// makes a new Loop with the same Shared.
type Loop struct {
	cfg     Config
	store   Store
	trigger chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	warnNoSMTP sync.Once
	passes     atomic.Int64 // finished passes, for tests
}

// ErrNotLeader is returned by RunOnce when another node holds the alert
// lease: that node runs the passes.
var ErrNotLeader = errors.New("alerts: another node holds the alert lease and runs the passes")

// NewLoop returns a Loop that is not running yet. It panics if Shared is
// missing, which is a programming error in the caller.
func NewLoop(cfg Config) *Loop {
	if cfg.Shared == nil {
		panic("alerts: Config needs Shared")
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
	if cfg.MaxDigestTokens <= 0 {
		cfg.MaxDigestTokens = 1000
	}
	return &Loop{cfg: cfg, store: cfg.Shared.store, trigger: make(chan struct{}, 1)}
}

// Start runs the first pass at once (if this node holds the alert lease
// or can take it), then one every interval, in a new goroutine. Calling
// it again does nothing.
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
// pending for the next loop). The last loop of a Shared to stop gives the
// alert lease up, so another node takes over at once. Stop is safe to call
// more than once, and before Start.
func (l *Loop) Stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if done == nil {
		return
	}
	last := l.cfg.Shared.unregister(l)
	cancel()
	<-done
	if last {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.cfg.Shared.resign(ctx); err != nil {
			l.cfg.Logger.Debug("could not give up the alert lease; it expires on its own", zap.Error(err))
		}
	}
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

// RunOnce takes or renews the alert lease and runs one pass now, waiting
// for any other loop's pass on the same Shared to finish first. It returns
// ErrNotLeader when another node holds the lease, and an error when the
// pass could not read the store, when ctx ended, or when sending the
// digest failed (the failure is counted, and the tokens stay pending for a
// retry).
func (l *Loop) RunOnce(ctx context.Context) error {
	lease, ok, err := l.cfg.Shared.lead(ctx)
	if err != nil {
		return fmt.Errorf("taking the alert lease: %w", err)
	}
	if !ok {
		return ErrNotLeader
	}
	_, err = l.pass(ctx, lease)
	return err
}

func (l *Loop) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	keeper := make(chan struct{})
	go l.keepLease(ctx, keeper)
	defer func() { <-keeper }()
	var next time.Time // when the next pass is due; zero: at once
	for {
		wait := leaseRenew
		if _, leading := l.currentLease(); leading {
			if !l.cfg.Clock.Now().Before(next) {
				wait, next = l.leadPass(ctx)
				if ctx.Err() != nil {
					return
				}
			} else {
				wait = next.Sub(l.cfg.Clock.Now())
			}
		} else {
			next = time.Time{} // on taking the lead, pass at once
		}
		timer := time.NewTimer(min(max(wait, minWait), leaseRenew))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-l.trigger:
			timer.Stop()
			next = time.Time{}
		case <-timer.C:
		}
	}
}

// leadPass renews the lease and runs a pass under it, and returns how long
// to wait and when the next pass is due. A lease lost meanwhile is not an
// error: the node that has it runs the passes.
func (l *Loop) leadPass(ctx context.Context) (wait time.Duration, next time.Time) {
	lease, leading, err := l.cfg.Shared.lead(ctx)
	if err != nil || !leading {
		return leaseRenew, time.Time{}
	}
	wait, err = l.pass(ctx, lease)
	switch {
	case errors.Is(err, storage.ErrLeaseLost):
		return leaseRenew, time.Time{}
	case err != nil && !errors.Is(err, context.Canceled):
		// Logged even when Stop came meanwhile: a failed email is counted
		// as soon as it fails, and its log line must not depend on timing.
		l.cfg.Logger.Error("alert pass failed", zap.Error(err), zap.Duration("next_pass_in", wait))
	}
	return wait, l.cfg.Clock.Now().Add(wait)
}

// keepLease takes or renews the alert lease every leaseRenew until ctx
// ends, so a long pass never outlives its lease.
func (l *Loop) keepLease(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		was := l.cfg.Shared.Leading()
		_, leading, err := l.cfg.Shared.lead(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			l.cfg.Logger.Warn("could not take or renew the alert lease", zap.Error(err))
		case leading && !was:
			l.cfg.Logger.Info("this node now sends the expiry emails (holds the alert lease)")
			l.Trigger() // pass at once
		case !leading && was:
			l.cfg.Logger.Info("another node now sends the expiry emails (holds the alert lease)")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// currentLease returns the lease if this node holds it.
func (l *Loop) currentLease() (storage.Lease, bool) {
	sh := l.cfg.Shared
	sh.leaseMu.Lock()
	defer sh.leaseMu.Unlock()
	return sh.lease, sh.leading.Load()
}

// pass runs one pass under the Shared lock and the alert lease, and
// returns how long to wait before the next one.
func (l *Loop) pass(ctx context.Context, lease storage.Lease) (time.Duration, error) {
	sh := l.cfg.Shared
	if err := sh.acquire(ctx); err != nil {
		return 0, err
	}
	defer sh.release()

	now := l.cfg.Clock.Now()
	set, invalid, err := readSettings(ctx, l.store)
	if err != nil {
		return min(l.cfg.Interval, errorWait), err
	}
	if invalid != nil {
		l.cfg.Logger.Error("ignoring an invalid notification setting; fix it with PUT /settings/{key}", zap.Error(invalid))
	}
	sc, err := scanTokens(ctx, l.store, lease, now, set, l.cfg.MaxDigestTokens)
	if err != nil {
		return min(l.cfg.Interval, errorWait), err
	}
	retryIn, sendErr := l.notify(ctx, lease, now, set.recipients, sc)
	v := view{
		FinishedAt:       l.cfg.Clock.Now(),
		IntervalSeconds:  l.cfg.Interval.Seconds(),
		NotificationDays: set.largest(),
		Faults:           orEmpty(sc.faults),
		Expiring:         orEmpty(sc.expiring),
		Within:           sc.within[:],
	}
	b, err := json.Marshal(v)
	if err != nil {
		return min(l.cfg.Interval, errorWait), err
	}
	// The view is stored even if ctx was cancelled meanwhile: it holds
	// what this pass did (emails included).
	if err := l.store.PutAlertView(context.WithoutCancel(ctx), lease, b); err != nil {
		return min(l.cfg.Interval, errorWait), fmt.Errorf("storing the pass's results: %w", err)
	}
	l.cfg.Logger.Debug("alert pass finished", zap.Int("faults", len(sc.faults)),
		zap.Int("expiring_in_horizon", len(sc.expiring)), zap.Int("emailed_tokens", len(sc.notices)))

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
func (l *Loop) notify(ctx context.Context, lease storage.Lease, now time.Time, recipients []string, sc *scan) (retryIn time.Duration, err error) {
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
	if sameServer(r.smtp, l.cfg.Mailer.cfg) && now.Before(r.next) {
		return r.next.Sub(now), nil // backing off after a failure of this server
	}
	msg := composeDigest(now, sc.notices, sc.overdue)
	if err := l.cfg.Mailer.Send(ctx, recipients, msg.subject, msg.body); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err() // stopping; not the SMTP server's fault
		}
		l.cfg.Shared.failed.Add(1)
		if !sameServer(r.smtp, l.cfg.Mailer.cfg) {
			*r = retryState{smtp: l.cfg.Mailer.cfg}
		}
		r.failures++
		delay := retryDelay(r.failures, l.cfg.Interval)
		r.next = now.Add(delay)
		return delay, fmt.Errorf("sending the expiry email for %d tokens failed (%d in a row; retrying in %s, the tokens stay pending): %w",
			len(sc.notices), r.failures, delay, err)
	}
	l.cfg.Shared.sent.Add(1)
	*r = retryState{}
	// Record even if Stop was called meanwhile: the email is out, and a
	// missing record would send it again after the reload.
	if err := l.store.PutAlertStates(context.WithoutCancel(ctx), lease, notifiedStates(sc.notices)); err != nil {
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

// orEmpty returns s, or an empty slice for nil, so JSON says [] not null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
