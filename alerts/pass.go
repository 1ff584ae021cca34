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
	// stateFlushBatch bounds the new fault records buffered during a scan.
	stateFlushBatch = 1000
)

// maxDigestTokens bounds one digest email (and what a pass holds in memory
// for it). Tokens past it stay pending and go out in the next digest, which
// the loop sends soon after. A variable so tests can lower it.
var maxDigestTokens = 1000

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

// notice is one token to put in the digest.
type notice struct {
	fault     storage.Fault
	threshold int // the tightest threshold crossed, in days
}

// scan is the result of walking every permanent token once.
type scan struct {
	faults  []storage.Fault
	expiry  *expiryTable
	notices []notice // at most maxDigestTokens
	overdue int      // tokens that need an email but did not fit in notices
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

// scanTokens streams the permanent tokens once: it fills the expiry table
// with every active one, raises a fault for each inside the largest
// threshold or expired, records when new faults were first raised, and
// collects the tokens whose next email is due. Memory is bounded by the
// faults (tokens inside the window), not by the number of tokens, apart from
// the expiry table that the metric needs.
//
// prev, the last pass's table (or nil), sizes the new one, so that building
// it does not copy a growing million-row slice over and over.
func scanTokens(ctx context.Context, st Store, now time.Time, set settings, prev *expiryTable) (*scan, error) {
	s := &scanner{ctx: ctx, st: st, now: now, set: set,
		raised: map[string]storage.AlertState{}, out: &scan{expiry: prev.sizedLike()}}
	if err := st.ForEachPermanentToken(ctx, s.visit); err != nil {
		return nil, fmt.Errorf("scanning permanent tokens: %w", err)
	}
	return s.out, s.flush()
}

// scanner is the state of one scanTokens walk.
type scanner struct {
	ctx    context.Context
	st     Store
	now    time.Time
	set    settings
	raised map[string]storage.AlertState // new faults not yet recorded
	out    *scan
}

func (s *scanner) visit(t storage.Token) error {
	status := t.StatusAt(s.now)
	if status == storage.StatusActive {
		s.out.expiry.add(t.User, t.Name, t.ID, t.ExpiresAt)
	}
	threshold := tightestCrossed(s.set.thresholds, t.ExpiresAt.Sub(s.now))
	// A revoked token, or one already scheduled for revocation because it
	// was rotated, has been dealt with: warning about it would be noise.
	if threshold == 0 || t.RevokedAt != nil {
		return nil
	}
	state, err := s.alertState(t.ID)
	if err != nil {
		return err
	}
	f := newFault(t, status, s.now, state.RaisedAt)
	s.out.faults = append(s.out.faults, f)
	if s.set.recipients != nil && emailDue(state, threshold) {
		if len(s.out.notices) < maxDigestTokens {
			s.out.notices = append(s.out.notices, notice{f, threshold})
		} else {
			s.out.overdue++
		}
	}
	return nil
}

// alertState reads what the loop stored for a token; for a new fault it
// records now as the time the fault was first raised (in batches).
func (s *scanner) alertState(id string) (storage.AlertState, error) {
	state, found, err := s.st.GetAlertState(s.ctx, id)
	if err != nil {
		return state, fmt.Errorf("reading alert state of token %s: %w", id, err)
	}
	if found && !state.RaisedAt.IsZero() {
		return state, nil
	}
	state.RaisedAt = s.now
	s.raised[id] = state
	if len(s.raised) >= stateFlushBatch {
		return state, s.flush()
	}
	return state, nil
}

func (s *scanner) flush() error {
	if len(s.raised) == 0 {
		return nil
	}
	if err := s.st.PutAlertStates(s.ctx, s.raised); err != nil {
		return fmt.Errorf("recording new faults: %w", err)
	}
	clear(s.raised)
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
