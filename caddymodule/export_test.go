package caddymodule

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// NewTestProvider returns a provisioned provider over store, for the
// benchmark and the fuzz test, with its counters on a private registry.
func NewTestProvider(store tokenVerifier, requireAdmin, keepAuthorization bool) (*TokenAuth, error) {
	p := &TokenAuth{RequireAdmin: requireAdmin, KeepAuthorization: keepAuthorization}
	var err error
	p.gate, err = newTestGate(store, requireAdmin, RouteScopes{}, nil)
	return p, err
}

// NewTestHandler returns a provisioned api_token_auth handler over store,
// for the benchmark and the fuzz test, with its counters on a private
// registry; declared is the node's scope catalogue.
func NewTestHandler(store tokenVerifier, cfg AuthHandler, declared ...string) (*AuthHandler, error) {
	var err error
	cfg.gate, err = newTestGate(store, cfg.RequireAdmin, cfg.RouteScopes, declared)
	return &cfg, err
}

func newTestGate(store tokenVerifier, requireAdmin bool, rs RouteScopes, declared []string) (*gate, error) {
	counts, err := authCounters(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	return newGate(store, declared, requireAdmin, rs, counts, zap.NewNop(), new(atomic.Uint64))
}

func init() {
	caddy.RegisterModule(TestStorage{})
}

// TestStorage is Badger storage for in-process tests: the store opened on
// it runs on the clock UseTestClock registered for its path (so expiry is
// tested without waiting), with the cheapest password hash. Caddyfile:
// `storage test { path <dir> }`.
type TestStorage struct {
	BadgerStorage
}

// CaddyModule returns the Caddy module information.
func (TestStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "api_tokens.storage.test", New: func() caddy.Module { return new(TestStorage) }}
}

func (s *TestStorage) setStoreOptions(o *storage.Options) {
	o.PasswordCost = bcrypt.MinCost
	if c, ok := testClocks.Load(s.Path); ok {
		o.Clock = c.(storage.Clock)
	}
	if d, ok := testFlushIntervals.Load(s.Path); ok {
		o.LastUsedFlushInterval = d.(time.Duration)
	}
}

// testClocks maps a TestStorage directory to its store's clock.
var testClocks sync.Map

// UseTestClock makes the store that `storage test` opens in dir run on
// clock.
func UseTestClock(dir string, clock storage.Clock) { testClocks.Store(dir, clock) }

// testFlushIntervals maps a TestStorage directory to its store's
// LastUsedFlushInterval.
var testFlushIntervals sync.Map

// UseTestFlushInterval makes the store that `storage test` opens in dir
// write its batched last uses every d (real time) instead of every 30 s,
// so a test sees a token's last_used_ip and scope_usage without waiting.
func UseTestFlushInterval(dir string, d time.Duration) { testFlushIntervals.Store(dir, d) }

var _ storeOptionsSetter = (*TestStorage)(nil)
