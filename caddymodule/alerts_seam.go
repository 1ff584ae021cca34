package caddymodule

import "github.com/apitokens/caddy-api-tokens/storage"

// alertSeam is where the alerts package plugs into the app's lifecycle.
//
// SEAM (for the lead): wire alerts here. Everything else in caddymodule
// already calls these methods at the right moments:
//
//   - provision: build the loop's config from app.AlertInterval, app.SMTP,
//     app.shared.store, app.shared.clock and app.logger; register the
//     alert collectors on app.ctx.GetMetricsRegistry() (a fresh registry per
//     config generation, so register every time and tolerate
//     prometheus.AlreadyRegisteredError as registerAuthMetrics does). State
//     that must survive reloads (pass lock, email counters) belongs in
//     sharedState, next to the store.
//   - start / stop: the app's Start and Stop. On reload the new generation
//     starts before the old one stops, so two loops overlap briefly; their
//     passes must be serialized through the shared state.
//   - trigger: called by the admin API after a setting changes.
//   - faults: what GET /faults lists.
type alertSeam struct {
	app *App
}

func (s *alertSeam) provision(app *App) error {
	s.app = app
	return nil
}

func (s *alertSeam) start() error { return nil }

func (s *alertSeam) stop() error { return nil }

func (s *alertSeam) trigger() {}

func (s *alertSeam) faults() []storage.Fault { return nil }
