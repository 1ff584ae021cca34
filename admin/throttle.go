package admin

import (
	"container/list"
	"sync"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// LoginThrottleConfig tunes a LoginThrottle. Zero values get defaults.
type LoginThrottleConfig struct {
	// MaxFailures is how many failed logins a username or a client IP may
	// have within Window before further attempts get 429. Default 5.
	MaxFailures int
	// Window is how long failures are remembered, counted from the first
	// one. Default 15 minutes.
	Window time.Duration
	// MaxEntries bounds memory: past it the oldest entry is forgotten.
	// Default 100,000.
	MaxEntries int
	// Clock defaults to storage.SystemClock.
	Clock storage.Clock
}

// LoginThrottle counts failed logins per username and per client IP so that
// password guessing is slowed down whichever of the two an attacker varies.
// It is safe for concurrent use and meant to outlive config reloads, so a
// reload does not hand an attacker a fresh budget.
type LoginThrottle struct {
	cfg LoginThrottleConfig

	mu      sync.Mutex
	entries map[string]*list.Element // key -> element of order, Value *throttleEntry
	order   *list.List               // oldest window start first
}

type throttleEntry struct {
	key      string
	start    time.Time // first failure of the current window
	failures int
	// inFlight counts attempts that passed the check and whose password is
	// still being checked: without it, many parallel guesses would all pass
	// before the first failure is recorded.
	inFlight int
}

// NewLoginThrottle returns a throttle with c's settings, defaults filled in.
func NewLoginThrottle(c LoginThrottleConfig) *LoginThrottle {
	if c.MaxFailures <= 0 {
		c.MaxFailures = 5
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
	if c.Clock == nil {
		c.Clock = storage.SystemClock{}
	}
	return &LoginThrottle{cfg: c, entries: make(map[string]*list.Element), order: list.New()}
}

// begin reserves one login attempt for username from ip. If either has used
// up its budget it returns false and how long to wait; otherwise the caller
// must call end with the attempt's outcome.
func (t *LoginThrottle) begin(username, ip string) (retryAfter time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	t.pruneExpired(now)
	keys := throttleKeys(username, ip)
	for _, k := range keys {
		if wait, blocked := t.blockedLocked(k, now); blocked {
			retryAfter = max(retryAfter, wait)
		}
	}
	if retryAfter > 0 {
		return retryAfter, false
	}
	for _, k := range keys {
		t.entryLocked(k, now).inFlight++
	}
	return 0, true
}

// attemptOutcome is how a login attempt ended, for the throttle.
type attemptOutcome int

const (
	attemptSucceeded attemptOutcome = iota
	attemptFailed
	attemptUndecided // the password could not be checked (database unavailable)
)

// end records the outcome of an attempt begun with begin. A success clears
// the username's failures (the IP's stay: one right guess must not unlock
// guessing other accounts from the same address).
func (t *LoginThrottle) end(username, ip string, outcome attemptOutcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	for _, k := range throttleKeys(username, ip) {
		e := t.entryLocked(k, now)
		if e.inFlight > 0 { // 0 if the entry was evicted meanwhile
			e.inFlight--
		}
		if outcome == attemptFailed {
			e.failures++
		}
	}
	if outcome == attemptSucceeded && username != "" {
		t.removeLocked(userKey(username))
	}
}

// blockedLocked reports whether key has no attempts left, and until when.
func (t *LoginThrottle) blockedLocked(key string, now time.Time) (time.Duration, bool) {
	el, ok := t.entries[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*throttleEntry)
	if e.failures+e.inFlight < t.cfg.MaxFailures {
		return 0, false
	}
	wait := e.start.Add(t.cfg.Window).Sub(now)
	if e.failures < t.cfg.MaxFailures || wait < time.Second {
		// Blocked only by attempts still in flight: they finish within a
		// password check, so a short wait is the honest answer.
		wait = time.Second
	}
	return wait, true
}

// entryLocked returns key's entry, creating it (and evicting the oldest
// entry when full) or starting a new window if the old one has passed.
func (t *LoginThrottle) entryLocked(key string, now time.Time) *throttleEntry {
	if el, ok := t.entries[key]; ok {
		e := el.Value.(*throttleEntry)
		if !now.Before(e.start.Add(t.cfg.Window)) {
			e.start, e.failures = now, 0
			t.order.MoveToBack(el)
		}
		return e
	}
	for len(t.entries) >= t.cfg.MaxEntries {
		t.removeLocked(t.order.Front().Value.(*throttleEntry).key)
	}
	e := &throttleEntry{key: key, start: now}
	t.entries[key] = t.order.PushBack(e)
	return e
}

// pruneExpired forgets entries whose window has passed and that have no
// attempt in flight. The list is ordered by window start, so it stops at
// the first live one.
func (t *LoginThrottle) pruneExpired(now time.Time) {
	for el := t.order.Front(); el != nil; {
		e := el.Value.(*throttleEntry)
		if now.Before(e.start.Add(t.cfg.Window)) {
			return
		}
		next := el.Next()
		if e.inFlight == 0 {
			t.order.Remove(el)
			delete(t.entries, e.key)
		}
		el = next
	}
}

func (t *LoginThrottle) removeLocked(key string) {
	if el, ok := t.entries[key]; ok {
		t.order.Remove(el)
		delete(t.entries, key)
	}
}

// len reports how many entries are held, for tests of the memory bound.
func (t *LoginThrottle) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// throttleKeys names the counters an attempt touches. An empty username
// (one that is not even syntactically valid) counts against the IP only, so
// garbage usernames cannot fill memory with long keys.
func throttleKeys(username, ip string) []string {
	if username == "" {
		return []string{ipKey(ip)}
	}
	return []string{userKey(username), ipKey(ip)}
}

func userKey(username string) string { return "u:" + username }
func ipKey(ip string) string         { return "ip:" + ip }
