package alerts

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// Metric descriptions. The names and labels are part of the product's
// contract (spec section 4); dashboards and the shipped rules use them.
var (
	descTokenExpiry = prometheus.NewDesc("api_tokens_token_expiry_timestamp_seconds",
		"Expiry time of each active permanent token, in Unix seconds.",
		[]string{"user", "token", "token_id"}, nil)
	descExpiringTokens = prometheus.NewDesc("api_tokens_expiring_tokens",
		"Active faults: permanent tokens within the notification window, or expired and not yet deleted.",
		nil, nil)
	descNotificationDays = prometheus.NewDesc("api_tokens_notification_days",
		"The largest configured notification threshold in days (EnableUserTokenNotification); 0 when notifications are off.",
		nil, nil)
	descEmails = prometheus.NewDesc("api_tokens_notification_emails_total",
		"Expiry digest emails attempted, by result.",
		[]string{"result"}, nil)
	descTokens = prometheus.NewDesc("api_tokens_tokens",
		"Live (active) tokens by kind.",
		[]string{"kind"}, nil)
	descLastRun = prometheus.NewDesc("api_tokens_alert_last_run_timestamp_seconds",
		"When the alert loop last finished a pass, in Unix seconds.",
		nil, nil)
	descInterval = prometheus.NewDesc("api_tokens_alert_interval_seconds",
		"The configured alert_interval, so that alerting rules can tell a stalled loop from a slow one.",
		nil, nil)
)

// Collector returns a prometheus.Collector that reports the last pass's
// snapshot and the email counters. It holds no state of its own: every
// scrape reads the current snapshot, so a deleted token's series is gone
// after the next pass, and the collector of an old config generation reports
// the same values as the new one's. Register it once per registry; it is
// cheap to create.
func (s *Shared) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Shared }

// Describe sends the fixed descriptions of every metric the collector
// reports.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTokenExpiry, descExpiringTokens, descNotificationDays,
		descEmails, descTokens, descLastRun, descInterval} {
		ch <- d
	}
}

// Collect reports the email counters always, and the pass metrics once a
// pass has finished (before that there is nothing true to report). The
// token counts are read live from the store's memory.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descEmails, prometheus.CounterValue, float64(c.s.sent.Load()), "sent")
	ch <- prometheus.MustNewConstMetric(descEmails, prometheus.CounterValue, float64(c.s.failed.Load()), "failed")

	snap := c.s.current()
	if snap == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descExpiringTokens, float64(len(snap.faults)))
	gauge(descNotificationDays, float64(snap.notificationDays))
	gauge(descLastRun, unixSeconds(snap.finishedAt))
	gauge(descInterval, snap.interval.Seconds())
	counts := snap.countTokens()
	for _, kind := range []storage.TokenKind{storage.Permanent, storage.Temporary} {
		gauge(descTokens, float64(counts[kind]), string(kind))
	}
	snap.expiry.each(func(user, name, id string, expires int64) {
		gauge(descTokenExpiry, float64(expires), user, name, id)
	})
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// expiryTable holds the labels and expiry of every active permanent token,
// for api_tokens_token_expiry_timestamp_seconds. One series per token is
// inherent to that metric, so this is the one structure of a pass that grows
// with the number of tokens. It is packed into one byte arena plus a small
// fixed-size row per token (instead of three strings each), which roughly
// halves its size at a million tokens.
type expiryTable struct {
	labels []byte
	rows   []expiryRow
}

// expiryRow marks where a token's user, name and id end in labels; each
// starts where the previous one ends.
type expiryRow struct {
	userEnd, nameEnd, idEnd uint32
	expires                 int64 // Unix seconds
}

func (t *expiryTable) add(user, name, id string, expires time.Time) {
	t.labels = append(t.labels, user...)
	userEnd := uint32(len(t.labels))
	t.labels = append(t.labels, name...)
	nameEnd := uint32(len(t.labels))
	t.labels = append(t.labels, id...)
	t.rows = append(t.rows, expiryRow{userEnd, nameEnd, uint32(len(t.labels)), expires.Unix()})
}

// sizedLike returns an empty table with room for a little more than t
// holds.
func (t *expiryTable) sizedLike() *expiryTable {
	if t == nil {
		return &expiryTable{}
	}
	return &expiryTable{
		labels: make([]byte, 0, len(t.labels)+len(t.labels)/16),
		rows:   make([]expiryRow, 0, len(t.rows)+len(t.rows)/16),
	}
}

func (t *expiryTable) len() int {
	if t == nil {
		return 0
	}
	return len(t.rows)
}

func (t *expiryTable) each(fn func(user, name, id string, expires int64)) {
	if t == nil {
		return
	}
	var start uint32
	for _, r := range t.rows {
		fn(string(t.labels[start:r.userEnd]), string(t.labels[r.userEnd:r.nameEnd]),
			string(t.labels[r.nameEnd:r.idEnd]), r.expires)
		start = r.idEnd
	}
}
