package caddymodule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// What the api_token_auth handler and the api_token provider share: the
// verifier they ask, the counter they count in, the placeholders they set.

// tokenVerifier is all the gateway needs of the store: the in-memory check
// of a secret. It never touches the disk.
type tokenVerifier interface {
	Verify(secret string) (storage.Identity, storage.VerifyResult)
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
	n [storage.NumVerifyResults]atomic.Uint64
	_ [128 - storage.NumVerifyResults*8%128]byte // two lines: no false sharing, even with the adjacent-line prefetch
}

func (c *decisionCounters) count(r storage.VerifyResult) {
	if r < storage.NumVerifyResults {
		c.stripes[rand.Uint32()%counterStripes].n[r].Add(1)
	}
}

func (c *decisionCounters) total(r storage.VerifyResult) (sum uint64) {
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
	for _, r := range storage.AllVerifyResults() {
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
	return decisions, nil
}

// identityPlaceholders names the four placeholders of an identity under
// one prefix. The names are constants: caddyauth builds each name by
// concatenation and boxes each value, an allocation apiece per request.
type identityPlaceholders struct {
	id, tokenID, tokenKind, admin string
}

var (
	// Given on success. Caddy's access log reads {http.auth.user.id} for
	// its user_id field.
	userPlaceholders = identityPlaceholders{
		id:        "http.auth.user.id",
		tokenID:   "http.auth.user.token_id",
		tokenKind: "http.auth.user.token_kind",
		admin:     "http.auth.user.admin",
	}
	// Given on a 403, as caddyauth does for a refused candidate, so the
	// logs can tell who was refused. They never mean the request is
	// authenticated.
	candidatePlaceholders = identityPlaceholders{
		id:        "http.auth.candidate.id",
		tokenID:   "http.auth.candidate.token_id",
		tokenKind: "http.auth.candidate.token_kind",
		admin:     "http.auth.candidate.admin",
	}
)

// identityValues answers an identity's placeholders to Caddy's replacer.
// The store builds one per token and admin state (annotateIdentity) and
// caches it with the identity, so a request adds the ready-made lookup to
// its replacer, one append to a slice with room, instead of four locked
// map writes, the first of which allocates the replacer's map.
type identityValues struct {
	values          [4]any // username, token ID, kind, admin; boxed once
	user, candidate caddy.ReplacerFunc
}

// annotateIdentity is the store's Options.Annotate: it builds the
// placeholder values of id.
func annotateIdentity(id storage.Identity) any {
	v := &identityValues{values: [4]any{id.Username, id.TokenID, string(id.Kind), strconv.FormatBool(id.Admin)}}
	v.user = func(key string) (any, bool) { return userPlaceholders.lookup(key, &v.values) }
	v.candidate = func(key string) (any, bool) { return candidatePlaceholders.lookup(key, &v.values) }
	return v
}

func (n *identityPlaceholders) lookup(key string, values *[4]any) (any, bool) {
	switch key {
	case n.id:
		return values[0], true
	case n.tokenID:
		return values[1], true
	case n.tokenKind:
		return values[2], true
	case n.admin:
		return values[3], true
	}
	return nil, false
}

// giveIdentity makes the placeholders of id (user or candidate, by which)
// known to repl. An identity from a store opened without annotateIdentity
// (a test's) gets its values built here, at a few allocations.
func giveIdentity(repl *caddy.Replacer, id storage.Identity, candidate bool) {
	v, ok := id.Annotation.(*identityValues)
	if !ok {
		v = annotateIdentity(id).(*identityValues)
	}
	if candidate {
		repl.Map(v.candidate)
	} else {
		repl.Map(v.user)
	}
}
