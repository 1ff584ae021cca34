package caddymodule

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/alerts"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// sharedPool holds one sharedState per database (Badger directory or
// PostgreSQL DSN). A config reload provisions the new config before
// cleaning up the old one, so the reference count never drops to zero and
// the new generation reuses the open database (Badger cannot open one
// directory twice anyway).
var sharedPool = caddy.NewUsagePool()

// sharedState is everything that must outlive a config generation: the
// open database (which holds the failed-login throttle, so a reload or a
// restart gives an attacker no fresh budget), the clock and the alert
// loops' shared state (one pass at a time, counters, the last faults).
type sharedState struct {
	store  *storage.Store
	clock  storage.Clock
	alerts *alerts.Shared
	// undeclaredShown are the scopes (a mask) that a refused token carried
	// undeclared and that were logged already: once per scope and node.
	undeclaredShown atomic.Uint64
}

// Destruct closes the database once no config uses it; Close flushes the
// batched last-used times first.
func (s *sharedState) Destruct() error { return s.store.Close() }

// loadShared opens the database, or joins the already open one.
func loadShared(db tokenDatabase, opts storage.Options, logger *zap.Logger) (*sharedState, error) {
	val, _, err := sharedPool.LoadOrNew(db.poolKey(), func() (caddy.Destructor, error) {
		backend, err := db.open(context.Background(), opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("opening the token database (%s): %w", db.describe(), err)
		}
		store, err := storage.Open(context.Background(), backend, opts)
		if err != nil {
			return nil, fmt.Errorf("opening the token database (%s): %w", db.describe(), err)
		}
		logDatabase(logger, db)
		shared, err := alerts.NewShared(context.Background(), store.Alerting())
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("opening the token database (%s): %w", db.describe(), err)
		}
		// Every node hears of every setting change, so the node that
		// runs the alert passes reacts at once wherever it was made.
		store.OnSettingsChange(shared.Trigger)
		return &sharedState{store: store, clock: opts.Clock, alerts: shared}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*sharedState), nil
}
