package caddymodule

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// SetStoreOptions makes every database opened from now on use opts, so an
// integration test can drive expiry with a storage.FakeClock and hash
// passwords cheaply. It returns a function that restores the defaults.
func SetStoreOptions(opts storage.Options) (restore func()) {
	storeOptions.Store(&opts)
	return func() { storeOptions.Store(nil) }
}

// NewTestProvider returns a provisioned provider over store, for the
// benchmark, with its counters on a private registry.
func NewTestProvider(store *storage.Store, requireAdmin, keepAuthorization bool) (*TokenAuth, error) {
	counters, err := authCounters(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	return &TokenAuth{
		RequireAdmin:      requireAdmin,
		KeepAuthorization: keepAuthorization,
		store:             store,
		results:           counters,
	}, nil
}
