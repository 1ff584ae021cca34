package caddymodule_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

func alertingConfig(port int, dataDir, generation string) string {
	return fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin root root-password-1
		alert_interval 1h
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	respond "generation %s" 200
}
`, globalOptions, dataDir, port, generation)
}

// TestAlertsThroughCaddy follows a permanent token from creation to the
// notification window and to deletion through a real Caddy: the fault in
// GET /faults, the series on Caddy's /metrics, both surviving a reload,
// and the series gone once the token is deleted.
func TestAlertsThroughCaddy(t *testing.T) {
	dataDir := t.TempDir()
	clock := useFakeClock(dataDir)
	port := freePort(t)
	loadCaddy(t, alertingConfig(port, dataDir, "A"))
	base := fmt.Sprintf("http://localhost:%d/api-tokens", port)

	root := login(t, base, "root", "root-password-1")
	tok := createUserWithToken(t, base, root, "alice", "deploy")
	expirySeries := fmt.Sprintf(`api_tokens_token_expiry_timestamp_seconds{token="deploy",token_id="%s",user="alice"}`, tok.ID)

	// Setting the threshold runs a pass at once: the token is a year out,
	// so it is counted among the tokens expiring within 365 days, has no
	// series of its own (those are for the 30-day window) and raises no
	// fault.
	api(t, base, root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30"}, http.StatusOK, nil)
	waitForMetric(t, "api_tokens_notification_days", 30)
	waitForMetric(t, `api_tokens_permanent_tokens_expiring{within_days="365"}`, 1)
	waitForMetric(t, `api_tokens_permanent_tokens_expiring{within_days="30"}`, 0)
	if v, found := metricValue(t, expirySeries); found {
		t.Fatalf("a token a year out has its own expiry series (%v)", v)
	}
	waitForMetric(t, "api_tokens_expiring_tokens", 0)
	waitForMetric(t, `api_tokens_tokens{kind="permanent"}`, 1)

	// 340 days later the token has 25 days left: a fault, and its series.
	clock.Advance(340 * 24 * time.Hour)
	root = login(t, base, "root", "root-password-1") // the old session ended long ago
	api(t, base, root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30"}, http.StatusOK, nil)
	waitForMetric(t, "api_tokens_expiring_tokens", 1)
	waitForMetric(t, expirySeries, float64(tok.ExpiresAt.Unix()))
	fault := onlyFault(t, base, root)
	if fault.TokenID != tok.ID || fault.User != "alice" || fault.TokenName != "deploy" || fault.DaysLeft != 25 || fault.State != storage.FaultExpiring {
		t.Fatalf("GET /faults = %+v, want alice's deploy token expiring in 25 days", fault)
	}

	// A reload registers the collectors on a new registry and starts a new
	// loop: no registration error, and the same fault and series.
	if status, body := postConfig(t, "text/caddyfile", alertingConfig(port, dataDir, "B")); status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
	if resp := send(t, http.MethodGet, fmt.Sprintf("http://localhost:%d/", port), "", nil); string(resp.body) != "generation B" {
		t.Fatalf("after reload the gateway answers %d %q", resp.status, resp.body)
	}
	waitForMetric(t, "api_tokens_expiring_tokens", 1)
	waitForMetric(t, expirySeries, float64(tok.ExpiresAt.Unix()))
	if again := onlyFault(t, base, root); !again.RaisedAt.Equal(fault.RaisedAt) {
		t.Fatalf("after reload raised_at moved from %s to %s", fault.RaisedAt, again.RaisedAt)
	}

	// Deleting the token clears its fault and its series at the next pass.
	api(t, base, root, http.MethodDelete, "/users/alice/tokens/"+tok.ID, nil, http.StatusNoContent, nil)
	api(t, base, root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30"}, http.StatusOK, nil)
	waitForMetric(t, "api_tokens_expiring_tokens", 0)
	if _, found := metricValue(t, expirySeries); found {
		t.Fatalf("%s is still exported after the token was deleted", expirySeries)
	}
	var faults []storage.Fault
	api(t, base, root, http.MethodGet, "/faults", nil, http.StatusOK, &faults)
	if len(faults) != 0 {
		t.Fatalf("GET /faults after deletion = %+v, want none", faults)
	}
}

func onlyFault(t *testing.T, base, token string) storage.Fault {
	t.Helper()
	var faults []storage.Fault
	api(t, base, token, http.MethodGet, "/faults", nil, http.StatusOK, &faults)
	if len(faults) != 1 {
		t.Fatalf("GET /faults = %+v, want exactly one fault", faults)
	}
	return faults[0]
}

// waitForMetric polls Caddy's /metrics until series has value; the alert
// loop runs its pass in the background after a setting changes.
func waitForMetric(t *testing.T, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, found := metricValue(t, series)
		if found && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (exported: %v), want %v", series, got, found, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue reads one series from Caddy's /metrics.
func metricValue(t *testing.T, series string) (float64, bool) {
	t.Helper()
	resp := send(t, http.MethodGet, "http://"+adminEndpoint+"/metrics", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.status, resp.body)
	}
	for line := range strings.SplitSeq(string(resp.body), "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest, &v); err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}
