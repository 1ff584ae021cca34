package alerts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

const (
	day = 24 * time.Hour
	// stateBatch bounds the alert states read, and the new fault records
	// written, per round trip during a scan.
	stateBatch = 1000
	// metricsHorizon is how far ahead the per-token expiry series reach
	// when notifications are off; with them on, the largest threshold.
	metricsHorizon = 30 * day
)

// expiryBuckets are the windows of api_tokens_permanent_tokens_expiring:
// how many active permanent tokens expire within each, without a series
// per token.
var expiryBuckets = [...]int{1, 7, 30, 90, 365}

// settings is the alert configuration read from the store at each pass.
type settings struct {
	thresholds []int    // days, largest first; nil when notifications are off
	recipients []string // nil when no emails are configured
}

func (s settings) largest() int {
	if len(s.thresholds) == 0 {
		return 0
	}
	return s.thresholds[0]
}

// horizon is how far ahead per-token expiry series are reported.
func (s settings) horizon() time.Duration {
	if d := s.largest(); d > 0 {
		return time.Duration(d) * day
	}
	return metricsHorizon
}

// notice is one token to put in the digest.
type notice struct {
	fault     storage.Fault
	threshold int // the tightest threshold crossed, in days
}

// scan is the result of walking every permanent token once.
type scan struct {
	faults   []storage.Fault
	expiring []expiring
	within   [len(expiryBuckets)]int
	notices  []notice // at most Config.MaxDigestTokens
	overdue  int      // tokens that need an email but did not fit in notices
}

// readSettings reads the two notification settings. A missing setting
// means off. A stored value that no longer parses is reported in invalid
// and also treated as off, so one bad value cannot stop the rest of the
// pass; err is a storage failure that stops it.
func readSettings(ctx context.Context, st Store) (s settings, invalid, err error) {
	read := func(key string) (string, bool, error) {
		v, err := st.GetSetting(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("reading setting %s: %w", key, err)
		}
		return v, true, nil
	}
	var errDays, errEmails error
	days, ok, err := read(storage.SettingNotificationDays)
	if err != nil {
		return s, nil, err
	}
	if ok {
		s.thresholds, errDays = storage.ParseNotificationDays(days)
	}
	emails, ok, err := read(storage.SettingNotificationEmails)
	if err != nil {
		return s, nil, err
	}
	if ok {
		s.recipients, errEmails = storage.ParseNotificationEmails(emails)
	}
	return s, errors.Join(errDays, errEmails), nil
}

// scanTokens streams the permanent tokens once, in expiry order: it
// counts the active ones by expiry window, lists those inside the metrics
// horizon, raises a fault for each inside the largest threshold or
// expired, records when new faults were first raised, and collects the
// tokens whose next email is due. Memory is bounded by the tokens inside
// the window and the horizon, not by the number of tokens. Alert states
// are read, and new fault records written, stateBatch at a time.
func scanTokens(ctx context.Context, st Store, lease storage.Lease, now time.Time, set settings, maxDigest int) (*scan, error) {
	s := &scanner{ctx: ctx, st: st, lease: lease, now: now, set: set, maxDigest: maxDigest, out: &scan{}}
	if err := st.ForEachPermanentToken(ctx, s.visit); err != nil {
		return nil, fmt.Errorf("scanning permanent tokens: %w", err)
	}
	if err := s.resolve(); err != nil {
		return nil, err
	}
	return s.out, nil
}

// scanner is the state of one scanTokens walk.
type scanner struct {
	ctx   context.Context
	st    Store
	lease storage.Lease
	now   time.Time
	set   settings
	// maxDigest is Config.MaxDigestTokens.
	maxDigest int
	pending   []pendingFault // faults waiting for their alert state
	out       *scan
}

// pendingFault is a token inside the window, before its alert state is
// read.
type pendingFault struct {
	token     storage.Token
	status    storage.TokenStatus
	threshold int
}

func (s *scanner) visit(t storage.Token) error {
	status := t.StatusAt(s.now)
	left := t.ExpiresAt.Sub(s.now)
	if status == storage.StatusActive {
		for i, d := range expiryBuckets {
			if left <= time.Duration(d)*day {
				s.out.within[i]++
			}
		}
		if left <= s.set.horizon() {
			s.out.expiring = append(s.out.expiring, expiring{User: t.User, Token: t.Name, TokenID: t.ID, Expires: t.ExpiresAt.Unix()})
		}
	}
	threshold := tightestCrossed(s.set.thresholds, left)
	// A revoked token, or one already scheduled for revocation because it
	// was rotated, has been dealt with: warning about it would be noise.
	if threshold == 0 || t.RevokedAt != nil {
		return nil
	}
	s.pending = append(s.pending, pendingFault{t, status, threshold})
	if len(s.pending) >= stateBatch {
		return s.resolve()
	}
	return nil
}

// resolve reads the alert states of the pending faults in one call,
// records when new faults were first raised (fenced by the lease), and
// turns them into faults and notices.
func (s *scanner) resolve() error {
	if len(s.pending) == 0 {
		return nil
	}
	ids := make([]string, len(s.pending))
	for i, p := range s.pending {
		ids[i] = p.token.ID
	}
	states, err := s.st.GetAlertStates(s.ctx, ids)
	if err != nil {
		return fmt.Errorf("reading alert states: %w", err)
	}
	raised := map[string]storage.AlertState{}
	for _, p := range s.pending {
		state := states[p.token.ID]
		if state.RaisedAt.IsZero() {
			state.RaisedAt = s.now
			raised[p.token.ID] = state
		}
		f := newFault(p.token, p.status, s.now, state.RaisedAt)
		s.out.faults = append(s.out.faults, f)
		if s.set.recipients != nil && emailDue(state, p.threshold) {
			if len(s.out.notices) < s.maxDigest {
				s.out.notices = append(s.out.notices, notice{f, p.threshold})
			} else {
				s.out.overdue++
			}
		}
	}
	s.pending = s.pending[:0]
	if err := s.st.PutAlertStates(s.ctx, s.lease, raised); err != nil {
		return fmt.Errorf("recording new faults: %w", err)
	}
	return nil
}

// tightestCrossed returns the smallest threshold (in days) that a token
// with remaining time left is within, or 0 if it is outside them all.
// thresholds is sorted largest first. An expired token is within all of
// them.
func tightestCrossed(thresholds []int, remaining time.Duration) int {
	tightest := 0
	for _, d := range thresholds {
		if remaining <= time.Duration(d)*day {
			tightest = d
		}
	}
	return tightest
}

// emailDue applies the once-per-token-and-threshold rule: a token is
// emailed when it has crossed a threshold tighter than the tightest one it
// was already warned at. A token first seen inside several thresholds is
// emailed once, for the tightest, and the wider ones count as sent; raising
// the thresholds later never re-notifies a token warned at a tighter one.
func emailDue(state storage.AlertState, threshold int) bool {
	return threshold > 0 && (state.NotifiedDays == 0 || threshold < state.NotifiedDays)
}

func newFault(t storage.Token, status storage.TokenStatus, now, raisedAt time.Time) storage.Fault {
	f := storage.Fault{
		TokenID:   t.ID,
		User:      t.User,
		TokenName: t.Name,
		ExpiresAt: t.ExpiresAt,
		State:     storage.FaultExpiring,
		RaisedAt:  raisedAt,
	}
	if status == storage.StatusExpired {
		f.State = storage.FaultExpired
	} else {
		// Whole days left, rounded down: "0 days left" means it expires
		// within the next 24 hours.
		f.DaysLeft = int(t.ExpiresAt.Sub(now) / day)
	}
	return f
}
