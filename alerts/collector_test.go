package alerts

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// expositionHeader returns the HELP and TYPE lines of a metric as the
// collector writes them.
func expositionHeader(name string) string {
	help := map[string]string{
		"api_tokens_token_expiry_timestamp_seconds":   "Expiry time of each active permanent token inside the notification window (or the next 30 days when notifications are off), in Unix seconds.",
		"api_tokens_permanent_tokens_expiring":        "Active permanent tokens that expire within the given number of days.",
		"api_tokens_expiring_tokens":                  "Active faults: permanent tokens within the notification window, or expired and not yet deleted.",
		"api_tokens_notification_days":                "The largest configured notification threshold in days (EnableUserTokenNotification); 0 when notifications are off.",
		"api_tokens_notification_emails_total":        "Expiry digest emails attempted by this node, by result.",
		"api_tokens_tokens":                           "Live (active) tokens by kind.",
		"api_tokens_alert_last_run_timestamp_seconds": "When the alert loop last finished a pass (on whichever node holds the alert lease), in Unix seconds.",
		"api_tokens_alert_interval_seconds":           "The alert_interval of the node that ran the last pass, so that alerting rules can tell a stalled loop from a slow one.",
		"api_tokens_leader":                           "1 if this node holds the alert lease and sends the expiry emails, else 0.",
	}[name]
	typ := "gauge"
	if strings.HasSuffix(name, "_total") {
		typ = "counter"
	}
	return fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func checkMetrics(t *testing.T, c prometheus.Collector, expected map[string]string) {
	t.Helper()
	var text strings.Builder
	var names []string
	for name, series := range expected {
		names = append(names, name)
		if series != "" {
			text.WriteString(expositionHeader(name) + series)
		}
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(text.String()), names...); err != nil {
		t.Error(err)
	}
}

func TestCollectorFollowsThePasses(t *testing.T) {
	w := newWorld(t)
	c := w.shared.Collector()

	// Before the first pass only the counters, the lease and the live
	// counts exist.
	checkMetrics(t, c, map[string]string{
		"api_tokens_notification_emails_total":        "api_tokens_notification_emails_total{result=\"failed\"} 0\napi_tokens_notification_emails_total{result=\"sent\"} 0\n",
		"api_tokens_leader":                           "api_tokens_leader 0\n",
		"api_tokens_expiring_tokens":                  "",
		"api_tokens_alert_last_run_timestamp_seconds": "",
	})

	soon := w.token("ci-bot", "deploy", 20*day)
	w.token("ci-bot", "backup", year)
	w.set(storage.SettingNotificationDays, "30;7;1")
	w.set(storage.SettingNotificationEmails, ops)
	w.clock.Advance(time.Hour)
	w.pass()

	// Only the token inside the 30-day window has a series of its own;
	// the year-long one is counted in the buckets.
	checkMetrics(t, c, map[string]string{
		"api_tokens_token_expiry_timestamp_seconds": fmt.Sprintf(
			"api_tokens_token_expiry_timestamp_seconds{token=\"deploy\",token_id=%q,user=\"ci-bot\"} %d\n",
			soon.ID, soon.ExpiresAt.Unix()),
		"api_tokens_permanent_tokens_expiring": "api_tokens_permanent_tokens_expiring{within_days=\"1\"} 0\n" +
			"api_tokens_permanent_tokens_expiring{within_days=\"30\"} 1\n" +
			"api_tokens_permanent_tokens_expiring{within_days=\"365\"} 2\n" +
			"api_tokens_permanent_tokens_expiring{within_days=\"7\"} 0\n" +
			"api_tokens_permanent_tokens_expiring{within_days=\"90\"} 1\n",
		"api_tokens_leader":                           "api_tokens_leader 1\n",
		"api_tokens_expiring_tokens":                  "api_tokens_expiring_tokens 1\n",
		"api_tokens_notification_days":                "api_tokens_notification_days 30\n",
		"api_tokens_notification_emails_total":        "api_tokens_notification_emails_total{result=\"failed\"} 0\napi_tokens_notification_emails_total{result=\"sent\"} 1\n",
		"api_tokens_tokens":                           "api_tokens_tokens{kind=\"permanent\"} 2\napi_tokens_tokens{kind=\"temporary\"} 0\n",
		"api_tokens_alert_last_run_timestamp_seconds": fmt.Sprintf("api_tokens_alert_last_run_timestamp_seconds %d\n", w.clock.Now().Unix()),
		"api_tokens_alert_interval_seconds":           "api_tokens_alert_interval_seconds 3600\n",
	})

	// Token counts are live: a new token counts before the next pass.
	fresh := w.token("ci-bot", "fresh", year)
	checkMetrics(t, c, map[string]string{
		"api_tokens_tokens": "api_tokens_tokens{kind=\"permanent\"} 3\napi_tokens_tokens{kind=\"temporary\"} 0\n",
	})
	if err := w.store.DeleteToken(w.ctx, "ci-bot", fresh.ID); err != nil {
		t.Fatal(err)
	}

	// A deleted token's series is gone after the next pass; an expired,
	// not deleted token stays a fault but has no expiry series (it is not
	// active); switching notifications off reports 0 days.
	if err := w.store.DeleteToken(w.ctx, "ci-bot", soon.ID); err != nil {
		t.Fatal(err)
	}
	expired := w.token("ci-bot", "old", day)
	w.clock.Advance(2 * day)
	w.pass()
	checkMetrics(t, c, map[string]string{
		"api_tokens_token_expiry_timestamp_seconds": "",
		"api_tokens_expiring_tokens":                "api_tokens_expiring_tokens 1\n",
		"api_tokens_tokens":                         "api_tokens_tokens{kind=\"permanent\"} 1\napi_tokens_tokens{kind=\"temporary\"} 0\n",
	})
	if f, ok := w.faultOf(expired.ID); !ok || f.State != storage.FaultExpired {
		t.Errorf("expired token's fault = %+v, found %v", f, ok)
	}

	// With notifications off, tokens within the next 30 days still have
	// their series, and nothing is a fault.
	near := w.token("ci-bot", "near", 10*day)
	w.unset(storage.SettingNotificationDays)
	w.pass()
	checkMetrics(t, c, map[string]string{
		"api_tokens_notification_days": "api_tokens_notification_days 0\n",
		"api_tokens_expiring_tokens":   "api_tokens_expiring_tokens 0\n",
		"api_tokens_token_expiry_timestamp_seconds": fmt.Sprintf(
			"api_tokens_token_expiry_timestamp_seconds{token=\"near\",token_id=%q,user=\"ci-bot\"} %d\n", near.ID, near.ExpiresAt.Unix()),
	})
}

// The counters live in Shared, so a reload (a new Loop, a new Collector on
// the new config's registry, which Caddy makes pedantic) keeps counting,
// and the collector lints clean.
func TestCollectorSurvivesReload(t *testing.T) {
	w := newWorld(t)
	w.token("ci-bot", "deploy", 5*day)
	w.set(storage.SettingNotificationDays, "7")
	w.set(storage.SettingNotificationEmails, ops)
	w.smtp.failWith(451)
	_ = w.loop().RunOnce(w.ctx)
	first := prometheus.NewPedanticRegistry()
	first.MustRegister(w.shared.Collector())

	// Reload: the next generation registers on its own registry; the old
	// collector stays registered on the old one (still scrapable a while).
	w.smtp.failWith(0)
	w.clock.Advance(time.Minute)
	w.pass()
	second := prometheus.NewPedanticRegistry()
	second.MustRegister(w.shared.Collector())
	emails := "api_tokens_notification_emails_total{result=\"failed\"} 1\napi_tokens_notification_emails_total{result=\"sent\"} 1\n"
	for _, reg := range []*prometheus.Registry{first, second} {
		want := expositionHeader("api_tokens_notification_emails_total") + emails
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "api_tokens_notification_emails_total"); err != nil {
			t.Error(err)
		}
	}
	problems, err := testutil.CollectAndLint(w.shared.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		// The spec fixes this name, after the setting it mirrors.
		if p.Metric == "api_tokens_notification_days" && strings.Contains(p.Text, `base unit "seconds"`) {
			continue
		}
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
