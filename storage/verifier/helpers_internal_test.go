package verifier

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock that moves only when told to.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// newTestVerifier returns a verifier at t0 that holds the users alice and
// root (an admin).
func newTestVerifier() (*Verifier, *fakeClock) {
	clock := &fakeClock{now: t0}
	v := New(Config{Clock: clock})
	v.PutUser(User{Name: "alice"})
	v.PutUser(User{Name: "root", Admin: true})
	return v, clock
}

// newID returns a fresh token id, as storage makes them.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return "tok_" + hex.EncodeToString(b[:])
}

// testToken is a token as the feed gives it, with its secret.
type testToken struct {
	secret string
	Token
}

// newToken makes a token of user that expires at expires.
func newToken(user string, kind secret.Kind, expires time.Time) testToken {
	sec := secret.New(kind)
	return testToken{sec, Token{Hash: secret.HashOf(sec), ID: []byte(newID()), User: []byte(user), Kind: kind, ExpiresAt: expires.UnixNano()}}
}

// put gives the verifier a token of user that expires at expires.
func put(t testing.TB, v *Verifier, user string, kind secret.Kind, expires time.Time) testToken {
	t.Helper()
	tok := newToken(user, kind, expires)
	if err := v.PutToken(tok.Token); err != nil {
		t.Fatal(err)
	}
	return tok
}

// isHot reports whether the hot table would answer for presented now.
func (v *Verifier) isHot(presented string, p *Policy) bool {
	return v.isHotFrom(presented, p, netip.Addr{})
}

// isHotFrom reports whether the hot table would answer for presented now,
// sent from client.
func (v *Verifier) isHotFrom(presented string, p *Policy, client netip.Addr) bool {
	e := v.cur.Load().hot.find(presented)
	if e == nil {
		return false
	}
	_, _, ok := e.decide(v.grants, v.clock.Now().UnixNano(), p, client)
	return ok
}

// holdsSecret reports whether the hot table holds presented at all.
func (v *Verifier) holdsSecret(presented string) bool {
	return v.cur.Load().hot.find(presented) != nil
}

// lockedVerify decides presented on the locked path alone.
func (v *Verifier) lockedVerify(presented string, p *Policy, client netip.Addr) (Identity, Result) {
	id, r, _ := v.cur.Load().verify(v.grants, secret.HashOf(presented), v.clock.Now().UnixNano(), "", p, client)
	return id, r
}

// mustPolicy compiles a route's policy for the test.
func mustPolicy(t testing.TB, v *Verifier, required, declared []string, shadow, admin bool) *Policy {
	t.Helper()
	p, err := v.Policy(required, declared, shadow, admin)
	if err != nil {
		t.Fatal(err)
	}
	return &p
}
