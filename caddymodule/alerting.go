package caddymodule

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/alerts"
)

// alerting plugs the alerts package into the app's lifecycle. Each config
// generation has its own Loop; the alerts.Shared they all use lives in
// sharedState, next to the store, so that during a reload only one pass
// acts at a time, counters keep counting, and GET /faults and /metrics keep
// the last pass's results.
type alerting struct {
	loop *alerts.Loop
}

func (al *alerting) provision(a *App) error {
	var mailer *alerts.Mailer
	if a.SMTP != nil {
		var err error
		mailer, err = alerts.NewMailer(alerts.SMTPConfig{
			Host:       a.SMTP.Host,
			Port:       a.SMTP.Port,
			Username:   a.SMTP.Username,
			Password:   a.SMTP.Password,
			Encryption: a.SMTP.Encryption,
			From:       a.SMTP.From,
		})
		if err != nil {
			return fmt.Errorf("smtp: %v", err)
		}
	}
	if err := registerCollector(a.ctx.GetMetricsRegistry(), a.shared.alerts.Collector()); err != nil {
		return fmt.Errorf("registering alert metrics: %v", err)
	}
	al.loop = alerts.NewLoop(alerts.Config{
		Clock:    a.shared.clock,
		Logger:   a.logger.Named("alerts"),
		Interval: time.Duration(a.AlertInterval),
		Mailer:   mailer,
		Shared:   a.shared.alerts,
	})
	return nil
}

// registerCollector registers c, accepting the same collector already being
// there (a second api_tokens load into one registry).
func registerCollector(reg prometheus.Registerer, c prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return nil
	}
	return err
}

func (al *alerting) start() error {
	if al.loop != nil {
		al.loop.Start()
	}
	return nil
}

func (al *alerting) stop() error {
	if al.loop != nil {
		al.loop.Stop()
	}
	return nil
}
