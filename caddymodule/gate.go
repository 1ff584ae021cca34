package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/internal/bearer"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// RouteScopes are the scope options of api_token_auth and of the
// api_token provider.
type RouteScopes struct {
	// Scopes a token must hold, every one of them, to pass; each must be
	// declared in the api_tokens app's scope catalogue. A token without
	// one gets 403 with RFC 6750's insufficient_scope challenge naming
	// them.
	RequireScope []string `json:"require_scope,omitempty"`

	// "enforce" (the default) or "shadow": in shadow mode a token that
	// lacks a required scope passes, and is counted in
	// api_tokens_scope_shadow_refusals_total{scope} and logged, so a
	// rollout can be checked against real traffic before it is enforced.
	ScopeMode string `json:"scope_mode,omitempty"`
}

const (
	scopeModeEnforce = "enforce"
	scopeModeShadow  = "shadow"
)

// gate is what api_token_auth and the api_token provider check and
// answer, prepared at provision so a request costs no formatting and no
// allocation: the route's policy, its insufficient_scope answer, and its
// shadow counters.
type gate struct {
	verifier        tokenVerifier
	policy          verifier.Policy
	counts          *decisionCounters
	scopeRefusal    refusal // this route's 403 for a missing scope
	shadow          []shadowScope
	log             *zap.Logger
	lastShadowLog   atomic.Int64 // unix nanoseconds
	shadowUnlogged  atomic.Int64 // shadow passes since the last line
	undeclaredShown *atomic.Uint64
}

// shadowScope counts one required scope's shadow refusals.
type shadowScope struct {
	bit   uint64
	count *atomic.Uint64
}

// shadowLogEvery bounds the log lines of a shadow route: every pass is
// counted, one in each second is logged with the count of those not.
const shadowLogEvery = time.Second

// gateOf compiles a route's options against the app's catalogue.
func gateOf(app *App, requireAdmin bool, rs RouteScopes, counts *decisionCounters, log *zap.Logger) (*gate, error) {
	return newGate(app.verifier(), app.scopeNames(), requireAdmin, rs, counts, log, &app.shared.undeclaredShown)
}

// newGate compiles a route's options against the declared scopes of v's
// node.
func newGate(v tokenVerifier, declared []string, requireAdmin bool, rs RouteScopes, counts *decisionCounters, log *zap.Logger, undeclaredShown *atomic.Uint64) (*gate, error) {
	if err := checkRequiredScopes(rs.RequireScope, declared); err != nil {
		return nil, err
	}
	shadow := false
	switch rs.ScopeMode {
	case "", scopeModeEnforce:
	case scopeModeShadow:
		shadow = true
		if len(rs.RequireScope) == 0 {
			return nil, errors.New("scope_mode shadow needs require_scope: there is nothing to shadow")
		}
	default:
		return nil, fmt.Errorf("scope_mode must be %s or %s, not %q", scopeModeEnforce, scopeModeShadow, rs.ScopeMode)
	}
	policy, err := v.Policy(rs.RequireScope, declared, shadow, requireAdmin)
	if err != nil {
		return nil, err
	}
	g := &gate{verifier: v, policy: policy, counts: counts, log: log, undeclaredShown: undeclaredShown}
	required := slices.Clone(rs.RequireScope)
	slices.Sort(required)
	g.scopeRefusal = newScopeRefusal(strings.Join(required, " "))
	if shadow {
		for _, name := range rs.RequireScope {
			p, _ := v.Policy([]string{name}, declared, false, false) // compiled above already
			g.shadow = append(g.shadow, shadowScope{bit: p.Required(), count: shadowCounter(name)})
		}
	}
	return g, nil
}

// checkRequiredScopes refuses a require_scope that names a scope twice or
// one the catalogue does not declare: a typo must not lock a route.
func checkRequiredScopes(required, declared []string) error {
	for i, name := range required {
		if !slices.Contains(declared, name) {
			return fmt.Errorf("require_scope: scope %q is not declared in the api_tokens scope catalogue (declared: %s)", name, listOrNone(declared))
		}
		if slices.Contains(required[:i], name) {
			return fmt.Errorf("require_scope: scope %q is listed twice", name)
		}
	}
	return nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none; add `scope <name> \"<description>\"` lines to the global api_tokens block"
	}
	return strings.Join(names, ", ")
}

// varChecked is the request variable that holds the identity values of a
// token that a check on the request's route has passed already: a later
// check (the spec's `api_token_auth @write` before a plain one) decides
// the same token again after the first has taken the Authorization
// header off. Only a pointer of our own type counts, which no config or
// client can put there.
const varChecked = "api_tokens.checked"

// verify decides a request: the identity and, for a refusal, the answer
// (nil: the request passes). It counts the decision, and on a shadow
// route what the token lacked.
func (g *gate) verify(r *http.Request) (verifier.Identity, *refusal) {
	secret, found := bearer.Parse(r.Header[headerAuthorization])
	if found == bearer.Missing {
		if prior, ok := caddyhttp.GetVar(r.Context(), varChecked).(*identityValues); ok {
			return g.decide(g.verifier.VerifyHashFrom(prior.identity.Hash, &g.policy, clientAddr(r)))
		}
	}
	if found != bearer.Found {
		rf := refusalFor(found)
		g.counts.count(rf.result)
		return verifier.Identity{}, rf
	}
	return g.decide(g.verifier.VerifyFrom(secret, &g.policy, clientAddr(r)))
}

// decide counts a decision and picks its answer.
func (g *gate) decide(id verifier.Identity, res verifier.Result) (verifier.Identity, *refusal) {
	switch res {
	case verifier.ResultOK:
		g.counts.count(res)
		if g.shadow != nil {
			g.countShadow(&id)
		}
		return id, nil
	case verifier.ResultInsufficientScope:
		g.counts.count(res)
		g.noteUndeclared(&id)
		return id, &g.scopeRefusal
	}
	rf := &refusals[res]
	g.counts.count(rf.result)
	return id, rf
}

// clientAddr is the request's client address as Caddy resolved it, which
// honours the server's trusted_proxies; the zero Addr if it has none.
func clientAddr(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	a, _ := netip.ParseAddr(s)
	return a
}

// countShadow counts the required scopes a passing token lacked, and
// logs it (at most one line per shadowLogEvery).
func (g *gate) countShadow(id *verifier.Identity) {
	missing := g.policy.Missing(id)
	if missing == 0 {
		return
	}
	for _, s := range g.shadow {
		if missing&s.bit != 0 {
			s.count.Add(1)
		}
	}
	now := time.Now().UnixNano()
	last := g.lastShadowLog.Load()
	if now-last < int64(shadowLogEvery) || !g.lastShadowLog.CompareAndSwap(last, now) {
		g.shadowUnlogged.Add(1)
		return
	}
	g.log.Info("scope_mode shadow: a token without a required scope passed; it would be refused when enforced",
		zap.String("token_id", id.TokenID), zap.String("user", id.Username),
		zap.String("missing_scopes", g.verifier.ScopeNames(missing)),
		zap.Int64("more_not_logged", g.shadowUnlogged.Swap(0)))
}

// noteUndeclared logs, once per node and scope, a token refused because
// it carries a scope this node's catalogue does not declare (declared on
// another node of a fleet, or removed from this one's config).
func (g *gate) noteUndeclared(id *verifier.Identity) {
	unknown := g.policy.Undeclared(id)
	if unknown == 0 || unknown&^g.undeclaredShown.Load() == 0 {
		return
	}
	g.undeclaredShown.Or(unknown)
	g.log.Warn("a token carries scopes this node does not declare, so it is refused on this node's scoped routes; declare them in the api_tokens scope catalogue of every node, or remove them from the token",
		zap.String("token_id", id.TokenID), zap.String("user", id.Username),
		zap.String("undeclared_scopes", g.verifier.ScopeNames(unknown)))
}

// newScopeRefusal is the 403 of a route requiring scopes (RFC 6750
// section 3.1): the challenge and the body name them.
func newScopeRefusal(scopes string) refusal {
	rf := newRefusal(verifier.ResultInsufficientScope, http.StatusForbidden, bearer.ChallengeInsufficientScope(scopes), "insufficient_scope")
	body, err := jsonLine(struct {
		Error string `json:"error"`
		Scope string `json:"scope"`
	}{"insufficient_scope", scopes})
	if err != nil {
		panic(err) // strings always encode
	}
	rf.body = body
	return rf
}

// shadowRefusals are the process's shadow refusals by scope, kept across
// config reloads; a scope has a series once a shadow route requires it.
var shadowRefusals = struct {
	mu sync.Mutex
	by map[string]*atomic.Uint64
}{by: map[string]*atomic.Uint64{}}

func shadowCounter(scope string) *atomic.Uint64 {
	shadowRefusals.mu.Lock()
	defer shadowRefusals.mu.Unlock()
	n := shadowRefusals.by[scope]
	if n == nil {
		n = new(atomic.Uint64)
		shadowRefusals.by[scope] = n
	}
	return n
}

var shadowRefusalsDesc = prometheus.NewDesc("api_tokens_scope_shadow_refusals_total",
	"Requests that scope_mode shadow routes let through although the token lacked a required scope, by scope: what enforcing would refuse.",
	[]string{"scope"}, nil)

// shadowCollector exports shadowRefusals.
type shadowCollector struct{}

func (shadowCollector) Describe(ch chan<- *prometheus.Desc) { ch <- shadowRefusalsDesc }

func (shadowCollector) Collect(ch chan<- prometheus.Metric) {
	shadowRefusals.mu.Lock()
	defer shadowRefusals.mu.Unlock()
	for scope, n := range shadowRefusals.by {
		ch <- prometheus.MustNewConstMetric(shadowRefusalsDesc, prometheus.CounterValue, float64(n.Load()), scope)
	}
}
