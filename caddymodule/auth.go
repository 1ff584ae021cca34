package caddymodule

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
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

// decisionCounters holds one resolved counter per storage.VerifyResult,
// so the hot path increments without a label lookup or an allocation.
type decisionCounters []prometheus.Counter

func (c decisionCounters) count(r storage.VerifyResult) {
	if int(r) < len(c) {
		c[r].Inc()
	}
}

// authRequests counts authentication decisions. It is created once per
// process so its values survive config reloads; each config generation
// has a fresh metrics registry and registers it again.
var authRequests = sync.OnceValue(func() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "api_tokens_auth_requests_total",
		Help: "Bearer token authentication decisions of api_token_auth and the api_token provider, by result.",
	}, []string{"result"})
})

// authCounters registers the auth counter on reg and returns one resolved
// counter per verification result, indexed by storage.VerifyResult. Every
// series exists from the start, so a rate() over `forbidden` works before
// the first refusal.
func authCounters(reg *prometheus.Registry) (decisionCounters, error) {
	vec := authRequests()
	// Several api_token_auth directives in one config share a registry, so
	// the second registration fails as already registered: like
	// reverseproxy's metrics, reuse the collector that is there.
	if err := reg.Register(vec); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			return nil, err
		}
		existing, ok := already.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("a different collector is registered as api_tokens_auth_requests_total: %v", err)
		}
		vec = existing
	}
	all := storage.AllVerifyResults()
	counters := make(decisionCounters, len(all))
	for _, r := range all {
		counters[r] = vec.WithLabelValues(r.String())
	}
	return counters, nil
}

// identityPlaceholders names the four placeholders of an identity under
// one prefix. The names are constants: caddyauth builds each name by
// concatenation and boxes each value, an allocation apiece per request.
type identityPlaceholders struct {
	id, tokenID, tokenKind, admin string
}

var (
	// Set on success. Caddy's access log reads {http.auth.user.id} for its
	// user_id field.
	userPlaceholders = identityPlaceholders{
		id:        "http.auth.user.id",
		tokenID:   "http.auth.user.token_id",
		tokenKind: "http.auth.user.token_kind",
		admin:     "http.auth.user.admin",
	}
	// Set on a 403, as caddyauth does for a refused candidate, so the logs
	// can tell who was refused. They never mean the request is authenticated.
	candidatePlaceholders = identityPlaceholders{
		id:        "http.auth.candidate.id",
		tokenID:   "http.auth.candidate.token_id",
		tokenKind: "http.auth.candidate.token_kind",
		admin:     "http.auth.candidate.admin",
	}
)

// Boxed once: a string converted to `any` per request would allocate.
var (
	placeholderPermanent any = string(storage.Permanent)
	placeholderTemporary any = string(storage.Temporary)
	placeholderAdmin         = [2]any{"false", "true"}
)

// set sets the four placeholders of id without allocating.
func (n *identityPlaceholders) set(repl *caddy.Replacer, id storage.Identity) {
	kind := placeholderTemporary
	if id.Kind == storage.Permanent {
		kind = placeholderPermanent
	}
	admin := placeholderAdmin[0]
	if id.Admin {
		admin = placeholderAdmin[1]
	}
	tokenID := id.TokenIDValue
	if tokenID == nil { // a verifier that does not box it: correct, one allocation
		tokenID = id.TokenID
	}
	repl.Set(n.id, usernameValue(id.Username))
	repl.Set(n.tokenID, tokenID)
	repl.Set(n.tokenKind, kind)
	repl.Set(n.admin, admin)
}

// usernameValue returns name boxed as an interface value, the form Caddy's
// replacer stores. The identity from storage carries its token ID boxed
// once, but not its username, so the boxes are kept here: a fixed table
// indexed by a hash of the name, each slot holding the last name that
// landed in it. A hit costs a hash and a comparison; a miss (a user's
// first request, or two active users sharing a slot) boxes the name again
// and takes the slot. The table never grows, whatever names come by, and
// its entries never go stale: a box holds nothing but the name.
func usernameValue(name string) any {
	slot := &usernameBoxes[maphash.String(usernameSeed, name)%uint64(len(usernameBoxes))]
	if b := slot.Load(); b != nil && b.name == name {
		return b.value
	}
	b := &usernameBox{name: name, value: name}
	slot.Store(b)
	return b.value
}

type usernameBox struct {
	name  string
	value any
}

var (
	usernameSeed  = maphash.MakeSeed()
	usernameBoxes [4096]atomic.Pointer[usernameBox]
)
