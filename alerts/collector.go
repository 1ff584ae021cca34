package alerts

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// Metric descriptions. The names and labels are part of the product's
// contract (spec section 4); dashboards and the shipped rules use them.
var (
	descTokenExpiry = prometheus.NewDesc("api_tokens_token_expiry_timestamp_seconds",
		"Expiry time of each active permanent token inside the notification window (or the next 30 days when notifications are off), in Unix seconds.",
		[]string{"user", "token", "token_id"}, nil)
	descExpiringWithin = prometheus.NewDesc("api_tokens_permanent_tokens_expiring",
		"Active permanent tokens that expire within the given number of days.",
		[]string{"within_days"}, nil)
	descExpiringTokens = prometheus.NewDesc("api_tokens_expiring_tokens",
		"Active faults: permanent tokens within the notification window, or expired and not yet deleted.",
		nil, nil)
	descNotificationDays = prometheus.NewDesc("api_tokens_notification_days",
		"The largest configured notification threshold in days (EnableUserTokenNotification); 0 when notifications are off.",
		nil, nil)
	descEmails = prometheus.NewDesc("api_tokens_notification_emails_total",
		"Expiry digest emails attempted by this node, by result.",
		[]string{"result"}, nil)
	descTokens = prometheus.NewDesc("api_tokens_tokens",
		"Live (active) tokens by kind.",
		[]string{"kind"}, nil)
	descLastRun = prometheus.NewDesc("api_tokens_alert_last_run_timestamp_seconds",
		"When the alert loop last finished a pass (on whichever node holds the alert lease), in Unix seconds.",
		nil, nil)
	descInterval = prometheus.NewDesc("api_tokens_alert_interval_seconds",
		"The alert_interval of the node that ran the last pass, so that alerting rules can tell a stalled loop from a slow one.",
		nil, nil)
	descLeader = prometheus.NewDesc("api_tokens_leader",
		"1 if this node holds the alert lease and sends the expiry emails, else 0.",
		nil, nil)

	// Sync metrics, on nodes of a shared (PostgreSQL) database only.
	descSyncConnected = prometheus.NewDesc("api_tokens_sync_connected",
		"1 while this node's change feed from the shared token database works, else 0.",
		nil, nil)
	descSyncLag = prometheus.NewDesc("api_tokens_sync_lag_seconds",
		"Seconds since this node last confirmed it had applied every change of the shared token database.",
		nil, nil)
	descSyncChanges = prometheus.NewDesc("api_tokens_sync_changes_total",
		"Changes applied from the shared token database's change feed.",
		nil, nil)
	descSyncReloads = prometheus.NewDesc("api_tokens_sync_full_reloads_total",
		"Times this node reloaded every token because the changes it missed had been pruned from the change log.",
		nil, nil)
)

// Collector returns a prometheus.Collector that reports the last pass's
// results and this node's counters. It holds no state of its own: every
// scrape reads the current view, which the store shares between the nodes
// of a fleet, so every node reports the same faults and expiry series
// (the shipped rules take one of them), a deleted token's series is gone
// after the next pass, and the collector of an old config generation
// reports the same values as the new one's. Register it once per registry;
// it is cheap to create.
func (s *Shared) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Shared }

// Describe sends the fixed descriptions of every metric the collector
// reports.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTokenExpiry, descExpiringWithin, descExpiringTokens, descNotificationDays,
		descEmails, descTokens, descLastRun, descInterval, descLeader,
		descSyncConnected, descSyncLag, descSyncChanges, descSyncReloads} {
		ch <- d
	}
}

// Collect reports the email counters, the lease and the live token counts
// always, and the pass metrics once any node has finished a pass (before
// that there is nothing true to report).
func (c collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descEmails, prometheus.CounterValue, float64(c.s.sent.Load()), "sent")
	ch <- prometheus.MustNewConstMetric(descEmails, prometheus.CounterValue, float64(c.s.failed.Load()), "failed")
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descLeader, boolGauge(c.s.Leading()))
	if st, shared := c.s.store.SyncStatus(); shared {
		gauge(descSyncConnected, boolGauge(st.Connected))
		gauge(descSyncLag, time.Since(st.LastSync).Seconds())
		ch <- prometheus.MustNewConstMetric(descSyncChanges, prometheus.CounterValue, float64(st.Changes))
		ch <- prometheus.MustNewConstMetric(descSyncReloads, prometheus.CounterValue, float64(st.FullReloads))
	}
	counts := c.s.store.CountTokens()
	for _, kind := range []storage.TokenKind{storage.Permanent, storage.Temporary} {
		gauge(descTokens, float64(counts[kind]), string(kind))
	}
	v := c.s.current()
	if v == nil {
		return
	}
	gauge(descExpiringTokens, float64(len(v.Faults)))
	gauge(descNotificationDays, float64(v.NotificationDays))
	gauge(descLastRun, unixSeconds(v.FinishedAt))
	gauge(descInterval, v.IntervalSeconds)
	for i, d := range expiryBuckets {
		if i < len(v.Within) {
			gauge(descExpiringWithin, float64(v.Within[i]), strconv.Itoa(d))
		}
	}
	for _, e := range v.Expiring {
		gauge(descTokenExpiry, float64(e.Expires), e.User, e.Token, e.TokenID)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
