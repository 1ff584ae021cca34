package caddymodule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// tokenVerifier is all the gateway needs of the store: the in-memory
// check of a secret (storage/verifier). It never touches the disk.
type tokenVerifier interface {
	VerifyFrom(presented string, p *verifier.Policy, client netip.Addr) (verifier.Identity, verifier.Result)
	VerifyHashFrom(h secret.Hash, p *verifier.Policy, client netip.Addr) (verifier.Identity, verifier.Result)
	// Policy compiles a route's scopes; ScopeNames names a scope mask.
	Policy(required, declared []string, shadow, admin bool) (verifier.Policy, error)
	ScopeNames(mask uint64) string
}

// decisionCounters counts authentication decisions by result. Every
// request counts one, on whichever core serves it, and a single counter per
// result would move its cache line between cores on every request; so the
// counts are spread over stripes, each on cache lines of its own, picked at
// random per request, and summed when Prometheus scrapes.
type decisionCounters struct {
	stripes [counterStripes]counterStripe
}

const counterStripes = 8

type counterStripe struct {
	n [verifier.NumResults]atomic.Uint64
	_ [128 - verifier.NumResults*8%128]byte // two lines: no false sharing, even with the adjacent-line prefetch
}

func (c *decisionCounters) count(r verifier.Result) {
	if r < verifier.NumResults {
		c.stripes[rand.Uint32()%counterStripes].n[r].Add(1)
	}
}

func (c *decisionCounters) total(r verifier.Result) (sum uint64) {
	for i := range c.stripes {
		sum += c.stripes[i].n[r].Load()
	}
	return sum
}

// decisions are the process's counts, so their values survive config
// reloads; each config generation has a fresh metrics registry and
// registers the collector again.
var decisions = new(decisionCounters)

// decisionCollector exports decisions as api_tokens_auth_requests_total.
type decisionCollector struct{}

var authRequestsDesc = prometheus.NewDesc("api_tokens_auth_requests_total",
	"Bearer token authentication decisions of api_token_auth and the api_token provider, by result.",
	[]string{"result"}, nil)

func (decisionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- authRequestsDesc }

// Collect gives every result's series, from the start, so a rate() over
// `forbidden` works before the first refusal.
func (decisionCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range verifier.AllResults() {
		ch <- prometheus.MustNewConstMetric(authRequestsDesc, prometheus.CounterValue, float64(decisions.total(r)), r.String())
	}
}

// authCounters registers the auth counter on reg and returns the counts
// to add to.
func authCounters(reg *prometheus.Registry) (*decisionCounters, error) {
	// Several api_token_auth directives in one config share a registry, so
	// the second registration fails as already registered: like
	// reverseproxy's metrics, keep the collector that is there.
	if err := reg.Register(decisionCollector{}); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return nil, err
		}
		if _, ok := already.ExistingCollector.(decisionCollector); !ok {
			return nil, fmt.Errorf("a different collector is registered as api_tokens_auth_requests_total: %v", err)
		}
	}
	if err := registerCollector(reg, shadowCollector{}); err != nil {
		return nil, err
	}
	return decisions, nil
}

// loginRefusals are the process's refused password checks by reason
// (admin.LoginUnknownUser and the others), kept across config reloads.
var loginRefusals = struct {
	unknownUser, wrongPassword, throttled atomic.Uint64
}{}

func countLoginRefusal(reason string) {
	switch reason {
	case admin.LoginUnknownUser:
		loginRefusals.unknownUser.Add(1)
	case admin.LoginWrongPassword:
		loginRefusals.wrongPassword.Add(1)
	case admin.LoginThrottled:
		loginRefusals.throttled.Add(1)
	}
}

var loginRefusalsDesc = prometheus.NewDesc("api_tokens_login_refusals_total",
	"Refused logins and current_password checks of this node, by reason: unknown_user, wrong_password, throttled.",
	[]string{"reason"}, nil)

// loginRefusalCollector exports loginRefusals as api_tokens_login_refusals_total.
type loginRefusalCollector struct{}

func (loginRefusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- loginRefusalsDesc }

func (loginRefusalCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range map[string]*atomic.Uint64{
		admin.LoginUnknownUser:   &loginRefusals.unknownUser,
		admin.LoginWrongPassword: &loginRefusals.wrongPassword,
		admin.LoginThrottled:     &loginRefusals.throttled,
	} {
		ch <- prometheus.MustNewConstMetric(loginRefusalsDesc, prometheus.CounterValue, float64(n.Load()), reason)
	}
}
