package caddymodule

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// SetStoreOptions makes every database opened from now on use opts, so an
// integration test can drive expiry with a testtools.FakeClock and hash
// passwords cheaply. It returns a function that restores the defaults.
func SetStoreOptions(opts storage.Options) (restore func()) {
	storeOptions.Store(&opts)
	return func() { storeOptions.Store(nil) }
}

// NewTestProvider returns a provisioned provider over store, for the
// benchmark and the fuzz test, with its counters on a private registry.
func NewTestProvider(store tokenVerifier, requireAdmin, keepAuthorization bool) (*TokenAuth, error) {
	counts, err := authCounters(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	return &TokenAuth{
		RequireAdmin:      requireAdmin,
		KeepAuthorization: keepAuthorization,
		verifier:          store,
		policy:            verifier.Policy{Admin: requireAdmin},
		counts:            counts,
	}, nil
}

// NewTestHandler returns a provisioned api_token_auth handler over store,
// for the benchmark and the fuzz test, with its counters on a private
// registry.
func NewTestHandler(store tokenVerifier, cfg AuthHandler) (*AuthHandler, error) {
	counts, err := authCounters(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	cfg.verifier = store
	cfg.policy = verifier.Policy{Admin: cfg.RequireAdmin}
	cfg.counts = counts
	return &cfg, nil
}
