// Package throttle is the login throttle of API tokens for Caddy: it slows
// password guessing without letting anyone lock a user out. Its counters
// are keys of the token database (the lt/ family of storage/keys.go's
// table), so every node of a fleet counts the same failures, and they
// survive restarts and reloads. Each node also remembers the refusals it
// read there until they run out, so a flood of refused attempts costs the
// database nothing.
package throttle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

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
// An "address" is the client's network of IPv4Prefix or IPv6Prefix bits
// (by default one IPv4 address, one IPv6 /64: whoever holds one address
// of a /64 usually holds all of it).
//
// Begin counts an attempt as a failure before its password is checked, in
// the same transaction as the check of the limits, so parallel guesses on
// one node or several cannot all pass before the first failure is
// recorded. End takes that failure back when the password was right, or
// could not be checked.

// Policy sets the throttle's limits. Zero fields get the defaults of
// DefaultPolicy.
type Policy struct {
	PairFailures    int           // failures per (username, address) within Window; default 5
	AddressFailures int           // failures per address within Window; default 20
	Window          time.Duration // default 15 minutes
	UserFailures    int           // failures per username before the backoff starts; default 5
	MaxBackoff      time.Duration // the per-username backoff's cap; default 5 minutes
	TrustedFor      time.Duration // how long a successful login exempts its address; default 30 days
	IPv4Prefix      int           // the bits of an IPv4 address that make one address; default 32
	IPv6Prefix      int           // the bits of an IPv6 address that make one address; default 64
}

// DefaultPolicy is the throttle the admin API applies.
var DefaultPolicy = Policy{
	PairFailures:    5,
	AddressFailures: 20,
	Window:          15 * time.Minute,
	UserFailures:    5,
	MaxBackoff:      5 * time.Minute,
	TrustedFor:      30 * 24 * time.Hour,
	IPv4Prefix:      32,
	IPv6Prefix:      64,
}

// WithDefaults is p with DefaultPolicy's value in each zero (or, for a
// prefix length, impossible) field.
func (p Policy) WithDefaults() Policy {
	d := DefaultPolicy
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
	if p.IPv4Prefix <= 0 || p.IPv4Prefix > 32 {
		p.IPv4Prefix = d.IPv4Prefix
	}
	if p.IPv6Prefix <= 0 || p.IPv6Prefix > 128 {
		p.IPv6Prefix = d.IPv6Prefix
	}
	return p
}

// backoff is how long after the user's last failure an untrusted address
// waits, once the user has n failures.
func (p Policy) backoff(n int) time.Duration {
	over := n - p.UserFailures
	if over < 0 {
		return 0
	}
	if over >= 30 { // 2^30 s is far past any cap; avoid overflowing the shift
		return p.MaxBackoff
	}
	return min(time.Duration(1<<over)*time.Second, p.MaxBackoff)
}

// Outcome is how a login attempt ended.
type Outcome int

const (
	// Failed: the password was wrong (or the user unknown or
	// disabled). The failure Begin counted stays.
	Failed Outcome = iota
	// Succeeded: the password was right. The pair's failures are
	// cleared and the address is trusted for the user.
	Succeeded
	// Unchecked: the password could not be checked (the database was
	// unavailable); the attempt is taken back, it was nobody's guess.
	Unchecked
)

// Attempt is an attempt Begin let through, to be passed to End. Its zero value is an attempt that was not counted.
type Attempt struct {
	user, addr  string
	policy      Policy
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

// throttleAddr is ip as it appears in throttle keys: its network of the
// policy's prefix length ("2001:db8:1:2::/64"), or the address itself
// for a full-length prefix.
func throttleAddr(ip string, p Policy) string {
	if ip == "" {
		return "-"
	}
	if a, err := netip.ParseAddr(ip); err == nil {
		a = a.Unmap().WithZone("")
		bits := p.IPv6Prefix
		if a.Is4() {
			bits = p.IPv4Prefix
		}
		if bits < a.BitLen() {
			network, _ := a.Prefix(bits)
			return network.String()
		}
		return a.String()
	}
	if len(ip) > maxAddrKeyLen {
		sum := sha256.Sum256([]byte(ip))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return ip
}

// The keys of the throttle (storage/keys.go lists them with every other
// key). Usernames cannot contain "/", so "lt/p/<user>/" and
// "lt/t/<user>/" never overlap between users. Every key is written with a
// TTL, so a flood of random usernames and addresses frees itself.
const (
	prefixPair  = "lt/p/" // lt/p/<username>/<address>: failures of one address for one user
	prefixAddr  = "lt/a/" // lt/a/<address>: failures from one address, any username
	prefixUser  = "lt/u/" // lt/u/<username>: failures for one user from untrusted addresses
	prefixTrust = "lt/t/" // lt/t/<username>/<address>: when this address last logged in as this user
)

func pairKey(user, addr string) string    { return prefixPair + user + "/" + addr }
func addrKey(addr string) string          { return prefixAddr + addr }
func userFailKey(user string) string      { return prefixUser + user }
func trustedKey(user, addr string) string { return prefixTrust + user + "/" + addr }

// Clock tells the time; tests move it.
type Clock interface {
	Now() time.Time
}

// Throttle counts the failures of logins in the token database.
type Throttle struct {
	db        kv.Backend
	clock     Clock
	validUser func(string) bool
	refused   refusals
}

// New returns the throttle over db. validUser tells which strings are
// usernames; no other string is ever put in a key (it may be anything,
// even a pasted password).
func New(db kv.Backend, clock Clock, validUser func(string) bool) *Throttle {
	return &Throttle{db: db, clock: clock, validUser: validUser, refused: refusals{until: map[string]time.Time{}}}
}

// txn is one transaction of the throttle, at one time.
type txn struct {
	kv.Writer
	now time.Time
}

func (t *Throttle) update(ctx context.Context, fn func(w txn) error) error {
	return t.db.Update(ctx, func(w kv.Writer) error { return fn(txn{w, t.clock.Now()}) })
}

// Begin decides whether a login attempt for user from ip may check its
// password. If so it returns wait 0 and the attempt, already counted as a
// failure; the caller must pass it to End with the outcome. If not, it
// returns how long to wait, and counts nothing. An empty user (or a
// string that is not even a valid username) counts against the address
// only.
func (t *Throttle) Begin(ctx context.Context, user, ip string, p Policy) (Attempt, time.Duration, error) {
	p = p.WithDefaults()
	if user != "" && !t.validUser(user) {
		user = ""
	}
	addr := throttleAddr(ip, p)
	addrK, pairK := addrKey(addr), ""
	if user != "" {
		pairK = pairKey(user, addr)
	}
	if wait := t.refused.wait(t.clock.Now(), addrK, pairK); wait > 0 {
		return Attempt{}, max(wait, time.Second), nil
	}
	var a Attempt
	var r refusal
	var at time.Time // the time the limits were read at
	err := t.update(ctx, func(w txn) error {
		var err error
		at = w.now
		a, r, err = begin(w, user, addr, p)
		return err
	})
	if err != nil {
		return Attempt{}, 0, err
	}
	if wait := max(r.addrWait, r.pairWait); wait > 0 {
		t.refused.remember(at, addrK, r.addrWait)
		t.refused.remember(at, pairK, r.pairWait)
		return Attempt{}, max(wait, time.Second), nil
	}
	return a, 0, nil
}

// refusal is why begin refused an attempt: how long its address, and its
// (username, address) pair, must wait.
type refusal struct {
	addrWait, pairWait time.Duration
}

func begin(w txn, user, addr string, p Policy) (Attempt, refusal, error) {
	now := w.now
	ac, err := readWindow(w, addrKey(addr), now, p.Window)
	if err != nil {
		return Attempt{}, refusal{}, err
	}
	r := refusal{addrWait: windowWait(ac, p.AddressFailures, now, p.Window)}
	var pc windowCount
	var uf userFailures
	trusted := false
	if user != "" {
		if pc, err = readWindow(w, pairKey(user, addr), now, p.Window); err != nil {
			return Attempt{}, refusal{}, err
		}
		r.pairWait = windowWait(pc, p.PairFailures, now, p.Window)
		if trusted, err = isTrusted(w, user, addr, now, p.TrustedFor); err != nil {
			return Attempt{}, refusal{}, err
		}
		// A trusted address never reads the per-user counter, so the
		// user's own logins do not even contend with an attack on it.
		if !trusted {
			if uf, err = readUserFailures(w, user, now, p.Window); err != nil {
				return Attempt{}, refusal{}, err
			}
			if b := p.backoff(uf.N); b > 0 {
				r.pairWait = max(r.pairWait, uf.Last.Add(b).Sub(now))
			}
		}
	}
	if r.addrWait > 0 || r.pairWait > 0 {
		return Attempt{}, r, nil
	}
	a := Attempt{user: user, addr: addr, policy: p, counted: true}
	if a.addrStart, err = countFailure(w, addrKey(addr), ac, now, p.Window); err != nil {
		return Attempt{}, refusal{}, err
	}
	if user == "" {
		return a, refusal{}, nil
	}
	if a.pairStart, err = countFailure(w, pairKey(user, addr), pc, now, p.Window); err != nil {
		return Attempt{}, refusal{}, err
	}
	if !trusted {
		a.userPrev, a.userAt = uf.Last, now
		uf.N++
		uf.Last = now
		if err := putThrottle(w, userFailKey(user), uf, p.Window); err != nil {
			return Attempt{}, refusal{}, err
		}
		a.userCounted = true
	}
	return a, refusal{}, nil
}

// End records how an attempt that Begin let through ended. A
// failure stays counted; a success clears the pair's failures and trusts
// the address for the user; an unchecked attempt is taken back. The
// per-user count is only taken back, never cleared: the real user's
// success must not hand an attacker a fresh budget.
func (t *Throttle) End(ctx context.Context, a Attempt, outcome Outcome) error {
	if !a.counted || outcome == Failed {
		return nil
	}
	// A refusal remembered meanwhile may have counted this attempt's
	// failure, which is now taken back: the database decides again.
	t.refused.forget(addrKey(a.addr))
	if a.user != "" {
		t.refused.forget(pairKey(a.user, a.addr))
	}
	return t.update(ctx, func(w txn) error {
		return end(w, a, outcome)
	})
}

func end(w txn, a Attempt, outcome Outcome) error {
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
	if outcome != Succeeded {
		return uncount(w, pairKey(a.user, a.addr), a.pairStart, now, p.Window)
	}
	if err := w.Delete(pairKey(a.user, a.addr)); err != nil {
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
func countFailure(w txn, key string, c windowCount, now time.Time, window time.Duration) (time.Time, error) {
	if c.N == 0 {
		c.Start = now
	}
	c.N++
	return c.Start, putThrottle(w, key, c, c.Start.Add(window).Sub(now))
}

// uncount takes one failure back from the window that started at start;
// a newer window (the old one passed meanwhile) is left alone.
func uncount(w txn, key string, start, now time.Time, window time.Duration) error {
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
	val, found, err := r.Get(key)
	if err != nil {
		return false, fmt.Errorf("throttle: read %s: %w", keyKind(key), err)
	}
	if !found {
		return false, nil
	}
	if err := json.Unmarshal(val, v); err != nil {
		return false, fmt.Errorf("throttle: corrupt %s record: %w", keyKind(key), err)
	}
	return true, nil
}

// putThrottle writes a throttle record that matters for ttl from now.
// The TTL lets the backend collect it (a flood of random usernames and
// addresses costs storage that frees itself); the Clock still decides.
func putThrottle(w txn, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("throttle: encode %s: %w", keyKind(key), err)
	}
	return w.Set(key, b, max(ttl, 0)+time.Minute)
}

// keyKind names what a key holds for error messages, without its content.
func keyKind(key string) string {
	switch key[:len(prefixPair)] {
	case prefixPair:
		return "login throttle (user and address)"
	case prefixAddr:
		return "login throttle (address)"
	case prefixUser:
		return "login throttle (user)"
	}
	return "login throttle (trusted address)"
}
