package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

// The login throttle slows password guessing without letting anyone lock
// a user out. Its counters live in the database, so every node of a fleet
// counts the same failures, and they survive restarts and reloads.
//
// Three counters limit an attempt, and a fourth record exempts one:
//
//   - per (username, address) pair: PairFailures failures within Window
//     block that pair until the window ends. One source guesses one
//     password as slowly as ever.
//   - per address, whatever the usernames: AddressFailures failures within
//     Window block the address (password spraying).
//   - per username, the failures from addresses that have not logged in as
//     that user lately: beyond UserFailures, each further attempt from such
//     an address waits 2^(n-UserFailures) seconds (at most MaxBackoff)
//     after the user's last failure. It is a backoff, not a lockout, so an
//     attacker with many addresses guesses slowly but never blocks the user
//     for long, and the count lasts until Window passes with no failure.
//   - trusted pairs: an address that logged in as the user in the last
//     TrustedFor is exempt from the per-user backoff (still subject to the
//     pair and address limits), so during an attack on an account its user
//     gets in at once from an address they used before.
//
// BeginLogin counts an attempt as a failure before its password is
// checked, in the same transaction as the check of the limits, so parallel
// guesses on one node or several cannot all pass before the first failure
// is recorded. EndLogin takes that failure back when the password was
// right, or could not be checked.

// LoginPolicy sets the throttle's limits. Zero fields get the defaults of
// DefaultLoginPolicy.
type LoginPolicy struct {
	PairFailures    int           // failures per (username, address) within Window; default 5
	AddressFailures int           // failures per address within Window; default 20
	Window          time.Duration // default 15 minutes
	UserFailures    int           // failures per username before the backoff starts; default 5
	MaxBackoff      time.Duration // the per-username backoff's cap; default 5 minutes
	TrustedFor      time.Duration // how long a successful login exempts its address; default 30 days
}

// DefaultLoginPolicy is the throttle the admin API applies.
var DefaultLoginPolicy = LoginPolicy{
	PairFailures:    5,
	AddressFailures: 20,
	Window:          15 * time.Minute,
	UserFailures:    5,
	MaxBackoff:      5 * time.Minute,
	TrustedFor:      30 * 24 * time.Hour,
}

func (p LoginPolicy) withDefaults() LoginPolicy {
	d := DefaultLoginPolicy
	if p.PairFailures <= 0 {
		p.PairFailures = d.PairFailures
	}
	if p.AddressFailures <= 0 {
		p.AddressFailures = d.AddressFailures
	}
	if p.Window <= 0 {
		p.Window = d.Window
	}
	if p.UserFailures <= 0 {
		p.UserFailures = d.UserFailures
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.TrustedFor <= 0 {
		p.TrustedFor = d.TrustedFor
	}
	return p
}

// backoff is how long after the user's last failure an untrusted address
// waits, once the user has n failures.
func (p LoginPolicy) backoff(n int) time.Duration {
	over := n - p.UserFailures
	if over < 0 {
		return 0
	}
	if over >= 30 { // 2^30 s is far past any cap; avoid overflowing the shift
		return p.MaxBackoff
	}
	return min(time.Duration(1<<over)*time.Second, p.MaxBackoff)
}

// LoginOutcome is how a login attempt ended.
type LoginOutcome int

const (
	// LoginFailed: the password was wrong (or the user unknown or
	// disabled). The failure BeginLogin counted stays.
	LoginFailed LoginOutcome = iota
	// LoginSucceeded: the password was right. The pair's failures are
	// cleared and the address is trusted for the user.
	LoginSucceeded
	// LoginUnchecked: the password could not be checked (the database was
	// unavailable); the attempt is taken back, it was nobody's guess.
	LoginUnchecked
)

// LoginAttempt is an attempt BeginLogin let through, to be passed to
// EndLogin. Its zero value is an attempt that was not counted.
type LoginAttempt struct {
	user, addr  string
	policy      LoginPolicy
	counted     bool
	pairStart   time.Time // the windows the failure was counted in, so
	addrStart   time.Time // a take-back never lowers a newer window
	userCounted bool      // the per-user counter was raised (untrusted address)
	userAt      time.Time // the time it recorded as the user's last failure,
	userPrev    time.Time // replacing this one, restored by a take-back
}

// windowCount is a pair's or an address's failures in the window that
// started at Start.
type windowCount struct {
	Start time.Time `json:"start"`
	N     int       `json:"n"`
}

// userFailures is a username's failures from untrusted addresses since
// the last quiet Window, and when the last one was.
type userFailures struct {
	N    int       `json:"n"`
	Last time.Time `json:"last"`
}

// trustedPair records when an address last logged in as a user.
type trustedPair struct {
	At time.Time `json:"at"`
}

// maxAddrKeyLen bounds an address in a key; a longer one (no IP address
// is) is hashed, so odd input cannot make long keys.
const maxAddrKeyLen = 64

// throttleAddr is ip as it appears in throttle keys.
func throttleAddr(ip string) string {
	switch {
	case ip == "":
		return "-"
	case len(ip) > maxAddrKeyLen:
		sum := sha256.Sum256([]byte(ip))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return ip
}

func pairKey(user, addr string) string    { return prefixThrottlePair + user + "/" + addr }
func addrKey(addr string) string          { return prefixThrottleAddr + addr }
func userFailKey(user string) string      { return prefixThrottleUser + user }
func trustedKey(user, addr string) string { return prefixThrottleTrust + user + "/" + addr }

// BeginLogin decides whether a login attempt for user from ip may check
// its password. If so it returns wait 0 and the attempt, already counted
// as a failure; the caller must pass it to EndLogin with the outcome. If
// not, it returns how long to wait, and counts nothing. An empty user (a
// string that is not even a valid username) counts against the address
// only.
func (s *Store) BeginLogin(ctx context.Context, user, ip string, p LoginPolicy) (LoginAttempt, time.Duration, error) {
	p = p.withDefaults()
	if user != "" && ValidateUsername(user) != nil {
		user = "" // never a key: it may be anything, even a pasted password
	}
	addr := throttleAddr(ip)
	var a LoginAttempt
	var wait time.Duration
	err := s.update(ctx, func(w *writeTxn) error {
		var err error
		a, wait, err = beginLogin(w, user, addr, p)
		return err
	})
	if err != nil {
		return LoginAttempt{}, 0, err
	}
	return a, wait, nil
}

func beginLogin(w *writeTxn, user, addr string, p LoginPolicy) (LoginAttempt, time.Duration, error) {
	now := w.now
	ac, err := readWindow(w, addrKey(addr), now, p.Window)
	if err != nil {
		return LoginAttempt{}, 0, err
	}
	wait := windowWait(ac, p.AddressFailures, now, p.Window)
	var pc windowCount
	var uf userFailures
	trusted := false
	if user != "" {
		if pc, err = readWindow(w, pairKey(user, addr), now, p.Window); err != nil {
			return LoginAttempt{}, 0, err
		}
		wait = max(wait, windowWait(pc, p.PairFailures, now, p.Window))
		if trusted, err = isTrusted(w, user, addr, now, p.TrustedFor); err != nil {
			return LoginAttempt{}, 0, err
		}
		// A trusted address never reads the per-user counter, so the
		// user's own logins do not even contend with an attack on it.
		if !trusted {
			if uf, err = readUserFailures(w, user, now, p.Window); err != nil {
				return LoginAttempt{}, 0, err
			}
			if b := p.backoff(uf.N); b > 0 {
				wait = max(wait, uf.Last.Add(b).Sub(now))
			}
		}
	}
	if wait > 0 {
		return LoginAttempt{}, max(wait, time.Second), nil
	}
	a := LoginAttempt{user: user, addr: addr, policy: p, counted: true}
	if a.addrStart, err = countFailure(w, addrKey(addr), ac, now, p.Window); err != nil {
		return LoginAttempt{}, 0, err
	}
	if user == "" {
		return a, 0, nil
	}
	if a.pairStart, err = countFailure(w, pairKey(user, addr), pc, now, p.Window); err != nil {
		return LoginAttempt{}, 0, err
	}
	if !trusted {
		a.userPrev, a.userAt = uf.Last, now
		uf.N++
		uf.Last = now
		if err := putThrottle(w, userFailKey(user), uf, p.Window); err != nil {
			return LoginAttempt{}, 0, err
		}
		a.userCounted = true
	}
	return a, 0, nil
}

// EndLogin records how an attempt that BeginLogin let through ended. A
// failure stays counted; a success clears the pair's failures and trusts
// the address for the user; an unchecked attempt is taken back. The
// per-user count is only taken back, never cleared: the real user's
// success must not hand an attacker a fresh budget.
func (s *Store) EndLogin(ctx context.Context, a LoginAttempt, outcome LoginOutcome) error {
	if !a.counted || outcome == LoginFailed {
		return nil
	}
	return s.update(ctx, func(w *writeTxn) error {
		return endLogin(w, a, outcome)
	})
}

func endLogin(w *writeTxn, a LoginAttempt, outcome LoginOutcome) error {
	now, p := w.now, a.policy
	if err := uncount(w, addrKey(a.addr), a.addrStart, now, p.Window); err != nil {
		return err
	}
	if a.user == "" {
		return nil
	}
	if a.userCounted {
		uf, err := readUserFailures(w, a.user, now, p.Window)
		if err != nil {
			return err
		}
		if uf.N > 0 {
			uf.N--
			if uf.Last.Equal(a.userAt) { // no failure since: the backoff runs from the one before
				uf.Last = a.userPrev
			}
			if err := putThrottle(w, userFailKey(a.user), uf, p.Window); err != nil {
				return err
			}
		}
	}
	if outcome != LoginSucceeded {
		return uncount(w, pairKey(a.user, a.addr), a.pairStart, now, p.Window)
	}
	if err := del(w, pairKey(a.user, a.addr)); err != nil {
		return err
	}
	return putThrottle(w, trustedKey(a.user, a.addr), trustedPair{At: now}, p.TrustedFor)
}

// readWindow returns the count at key, or a zero count if there is none
// or its window has passed.
func readWindow(r kv.Reader, key string, now time.Time, window time.Duration) (windowCount, error) {
	var c windowCount
	found, err := readThrottle(r, key, &c)
	if err != nil || !found || !now.Before(c.Start.Add(window)) {
		return windowCount{}, err
	}
	return c, nil
}

// windowWait is how long until c's window ends, if c has reached limit.
func windowWait(c windowCount, limit int, now time.Time, window time.Duration) time.Duration {
	if c.N < limit {
		return 0
	}
	return c.Start.Add(window).Sub(now)
}

// countFailure adds one failure to c (starting a window if c has none)
// and writes it with a TTL that ends with the window. It returns the
// window's start.
func countFailure(w *writeTxn, key string, c windowCount, now time.Time, window time.Duration) (time.Time, error) {
	if c.N == 0 {
		c.Start = now
	}
	c.N++
	return c.Start, putThrottle(w, key, c, c.Start.Add(window).Sub(now))
}

// uncount takes one failure back from the window that started at start;
// a newer window (the old one passed meanwhile) is left alone.
func uncount(w *writeTxn, key string, start, now time.Time, window time.Duration) error {
	c, err := readWindow(w, key, now, window)
	if err != nil || c.N == 0 || !c.Start.Equal(start) {
		return err
	}
	c.N--
	return putThrottle(w, key, c, c.Start.Add(window).Sub(now))
}

// readUserFailures returns the user's count, or zero once Window has
// passed since the last failure.
func readUserFailures(r kv.Reader, user string, now time.Time, window time.Duration) (userFailures, error) {
	var uf userFailures
	found, err := readThrottle(r, userFailKey(user), &uf)
	if err != nil || !found || !now.Before(uf.Last.Add(window)) {
		return userFailures{}, err
	}
	return uf, nil
}

func isTrusted(r kv.Reader, user, addr string, now time.Time, trustedFor time.Duration) (bool, error) {
	var tp trustedPair
	found, err := readThrottle(r, trustedKey(user, addr), &tp)
	return found && now.Before(tp.At.Add(trustedFor)), err
}

func readThrottle(r kv.Reader, key string, v any) (bool, error) {
	val, found, err := getValue(r, key)
	if err != nil || !found {
		return false, err
	}
	if err := json.Unmarshal(val, v); err != nil {
		return false, fmt.Errorf("storage: corrupt %s record: %w", keyKind(key), err)
	}
	return true, nil
}

// putThrottle writes a throttle record that matters for ttl from now.
// The TTL lets the backend collect it (a flood of random usernames and
// addresses costs storage that frees itself); the Clock still decides.
func putThrottle(w *writeTxn, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("storage: encode %s: %w", keyKind(key), err)
	}
	return setTTL(w, key, b, max(ttl, 0)+time.Minute)
}
