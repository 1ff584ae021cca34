// Package verifier decides, from memory, whether a bearer secret is a live
// token and whether it may pass a route: it holds every token and user the
// database has, as the change feed delivers them, and answers in well
// under a microsecond without touching the database or allocating.
//
// It knows nothing of databases, HTTP or Caddy. Package storage feeds it
// (Load at a reset, PutUser, PutToken and the removals for each change),
// and the gateway asks it (Verify). Every decision is made by one function,
// decide, which both of Verify's paths call: the hot table's, for tokens
// in use, and the locked one.
package verifier

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// Clock tells the time; tests move it.
type Clock interface {
	Now() time.Time
}

// Feed lets the verifier catch up with a database that other nodes write
// too (kv.CatchUpper is one): a token created on another node a moment
// ago may not have reached this node's memory yet.
type Feed interface {
	// CatchUp returns once everything committed before the call has been
	// applied, reading the database at once for it.
	CatchUp(ctx context.Context) error
	// AwaitFeed does the same without a read of its own, by waiting for
	// the feed's next one.
	AwaitFeed(ctx context.Context) error
}

// Config configures New.
type Config struct {
	// Clock is the time every decision is made at.
	Clock Clock
	// Feed, when other nodes write the database too, is consulted for a
	// well-formed token that is not in memory; nil when this node is the
	// database's only writer, and an unknown token is simply unknown.
	Feed Feed
}

// Verifier holds every token in memory and decides requests. Every method
// is safe for concurrent use.
type Verifier struct {
	// Verify reads these three on every request: together, they share a
	// cache line.
	clock Clock
	// cur is swapped whole when a Load is installed (a node that missed
	// changes reloads everything); Verify reads whichever is current.
	cur atomic.Pointer[table]
	// stale is set while this node's data is too old to judge tokens by.
	stale atomic.Bool

	feed   Feed
	misses missGuard
	grants *grants
}

// New returns a verifier that holds no token yet.
func New(cfg Config) *Verifier {
	v := &Verifier{clock: cfg.Clock, feed: cfg.Feed, grants: newGrants()}
	v.cur.Store(newTable(0))
	return v
}

// Policy is what a route asks of a token beyond being valid: made by
// Verifier.Policy when the route names scopes. The zero Policy, and a nil
// one, let every valid token pass (from its allowed networks).
type Policy struct {
	// Admin: only the tokens of administrators pass; others are
	// ResultForbidden.
	Admin bool
	// Shadow: a token that lacks a required scope passes; the caller
	// counts what it lacked (Missing).
	Shadow bool
	// required and declared are scope masks (grants.go).
	required, declared uint64
}

// Missing returns the route's required scopes that an identity's
// effective scopes lack, as a mask: what a shadow route counts.
func (p *Policy) Missing(id *Identity) uint64 { return p.required &^ id.Scopes }

// Undeclared returns the effective scopes of an identity that this node
// does not declare: what makes a token fail every scoped route here.
func (p *Policy) Undeclared(id *Identity) uint64 {
	if p.required == 0 {
		return 0
	}
	return id.Scopes &^ p.declared
}

// Required is the mask of the scopes the route requires.
func (p *Policy) Required() uint64 { return p.required }

// Identity is who a verified token speaks for.
type Identity struct {
	Username string
	TokenID  string
	Kind     secret.Kind
	Admin    bool
	// Scopes are the token's effective scopes: its own within its user's
	// ceiling, as a mask (ScopeNames tells them).
	Scopes uint64
	// Hash is the SHA-256 of the token's secret, by which VerifyHashFrom
	// decides it again for another check on the same request.
	Hash secret.Hash
}

// Result classifies a decision.
type Result uint8

const (
	ResultOK Result = iota
	// ResultMissing: no secret was presented.
	ResultMissing
	// ResultMalformed: not a secret of ours (length, prefix, checksum).
	ResultMalformed
	// ResultUnknown: well formed, but no such token (or its user was
	// deleted).
	ResultUnknown
	ResultExpired
	ResultRevoked
	// ResultDisabled: the token's user is disabled.
	ResultDisabled
	// ResultForbidden: a valid token that the route's Policy refuses.
	ResultForbidden
	// ResultUnavailable: a well-formed token that this node will not
	// judge, because its data is stale (SetStale).
	ResultUnavailable
	// ResultInsufficientScope: a valid token without a scope the route
	// requires (or with one this node does not declare).
	ResultInsufficientScope
	// ResultNetworkNotAllowed: a valid token used from outside its
	// allowed networks.
	ResultNetworkNotAllowed
	// NumResults is the number of results, for arrays indexed by one.
	NumResults
)

var resultNames = [NumResults]string{"ok", "missing", "malformed", "unknown", "expired", "revoked", "disabled", "forbidden", "unavailable", "insufficient_scope", "network_not_allowed"}

// String names the result in lower case, as metrics label it.
func (r Result) String() string {
	if r < NumResults {
		return resultNames[r]
	}
	return "unknown"
}

// AllResults lists every result.
func AllResults() []Result {
	all := make([]Result, NumResults)
	for i := range all {
		all[i] = Result(i)
	}
	return all
}

// RefusedByRoute reports whether r refuses a valid token for what the
// route or the request asks: the Identity then says whose token it was.
func (r Result) RefusedByRoute() bool {
	return r == ResultForbidden || r == ResultInsufficientScope || r == ResultNetworkNotAllowed
}

// state is what decide needs to know of a token and its user, read
// atomically by the path deciding.
type state struct {
	expires, revoked int64 // unix nanoseconds; revoked 0: not revoked
	userFlags        uint32
	inNetwork        bool   // the request came from the token's allowed networks
	effective        uint64 // the token's scopes within its user's ceiling
}

// effectiveScopes is a token's scopes within its user's ceiling; an
// administrator's ceiling is every scope.
func effectiveScopes(token, ceiling uint64, userFlags uint32) uint64 {
	if userFlags&flagAdmin != 0 {
		return token
	}
	return token & ceiling
}

// decide is the one place where a token's fate is decided: from its end
// times, its user's flags, where the request came from, its scopes, what
// the route asks for, and now (all unix nanoseconds). A revocation takes
// effect at its time exactly, as an expiry does, and wins over it.
func decide(s *state, p *Policy, now int64) Result {
	switch {
	case s.userFlags&flagDeleted != 0:
		return ResultUnknown
	case s.revoked != 0 && now >= s.revoked:
		return ResultRevoked
	case now >= s.expires:
		return ResultExpired
	case s.userFlags&flagDisabled != 0:
		return ResultDisabled
	case !s.inNetwork:
		return ResultNetworkNotAllowed
	case p == nil:
		return ResultOK
	case p.Admin && s.userFlags&flagAdmin == 0:
		return ResultForbidden
	case p.required != 0 && !p.Shadow &&
		(s.effective&p.required != p.required || s.effective&^p.declared != 0):
		return ResultInsufficientScope
	}
	return ResultOK
}

// Verify decides whether presented, a bearer secret, may pass a route
// with policy p (nil: any valid token) for a request that did not say
// where it came from: a token with allowed networks is refused.
func (v *Verifier) Verify(presented string, p *Policy) (Identity, Result) {
	return v.VerifyFrom(presented, p, netip.Addr{})
}

// VerifyFrom decides whether presented, a bearer secret, may pass a route
// with policy p (nil: any valid token) for a request from client. The
// Identity is set for ResultOK, and for the refusals of a valid token
// (Result.RefusedByRoute) so that a refusal can say whose token it
// refused.
//
// It never touches the database, never for a malformed secret either, and
// does not allocate (except once per token in use, for its cached id and
// hot entry). A token in use is recognized by its secret in the hot
// table, without hashing it or taking a lock; any other takes the lock of
// its shard. A revocation, deletion, expiry or disabled user is seen by
// the very next call once it is applied here, on this node and on others.
func (v *Verifier) VerifyFrom(presented string, p *Policy, client netip.Addr) (Identity, Result) {
	if len(presented) == secret.Len && !v.stale.Load() {
		// A token in use is recognized by its whole secret, which passed
		// secret.Parse when it was put in the hot table.
		if e := v.cur.Load().hot.find(presented); e != nil {
			if id, r, ok := e.decide(v.grants, v.clock.Now().UnixNano(), p, client); ok {
				return id, r
			}
		}
	}
	if presented == "" {
		return Identity{}, ResultMissing
	}
	if _, ok := secret.Parse(presented); !ok {
		return Identity{}, ResultMalformed
	}
	if v.stale.Load() {
		return Identity{}, ResultUnavailable
	}
	h := secret.HashOf(presented)
	id, r, unseen := v.cur.Load().verify(v.grants, h, v.clock.Now().UnixNano(), presented, p, client)
	if unseen && v.feed != nil {
		return v.verifyMiss(h, p, client)
	}
	return id, r
}

// VerifyHashFrom decides, as VerifyFrom does, the token whose secret has
// hash h: for a second check on a request (another route handler with
// another policy) after the first has taken the secret off the request.
func (v *Verifier) VerifyHashFrom(h secret.Hash, p *Policy, client netip.Addr) (Identity, Result) {
	if v.stale.Load() {
		return Identity{}, ResultUnavailable
	}
	id, r, _ := v.cur.Load().verify(v.grants, h, v.clock.Now().UnixNano(), "", p, client)
	return id, r
}

// SetStale makes Verify answer ResultUnavailable to every well-formed
// secret while stale is true: the node's data is too old to trust. It
// reports whether that changed anything.
func (v *Verifier) SetStale(stale bool) (changed bool) {
	return v.stale.Swap(stale) != stale
}

// Counts returns the active tokens by kind.
func (v *Verifier) Counts() map[secret.Kind]int {
	return v.cur.Load().counts(v.clock.Now())
}

// LastUsed returns when this node last saw the token with hash h used,
// or the zero time.
func (v *Verifier) LastUsed(h secret.Hash) time.Time {
	if n := v.cur.Load().lastUsedOf(h); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// Prune drops from memory the temporary tokens that have expired (their
// records expire in the database on their own), and what is cached for
// tokens not used for idleAfter: their ids and their secrets in the hot
// table. Call it now and then; Verify is right without it.
func (v *Verifier) Prune() {
	now := v.clock.Now()
	t := v.cur.Load()
	t.sweep(now)
	t.pruneIdle(now)
}
