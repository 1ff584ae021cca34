package caddymodule_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestAuditRetention runs Caddy with audit_retention 1d: after the clock
// moves two days on, the next config generation deletes the old entries
// when it starts and records the deletion in the log itself.
func TestAuditRetention(t *testing.T) {
	dataDir, port := t.TempDir(), freePort(t)
	clock := useFakeClock(dataDir)
	config := func(alertInterval string) string {
		return fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin root root-password-1
		alert_interval %s
		audit_retention 1d
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
`, globalOptions, dataDir, alertInterval, port)
	}
	base := fmt.Sprintf("http://localhost:%d/api-tokens", port)
	type entry struct {
		Time   time.Time `json:"time"`
		Action string    `json:"action"`
		Detail string    `json:"detail"`
	}
	auditLog := func(token string) []entry {
		var out []entry
		api(t, base, token, http.MethodGet, "/audit?limit=1000", nil, http.StatusOK, &out)
		return out
	}

	loadCaddy(t, config("1h"))
	first := auditLog(login(t, base, "root", "root-password-1"))
	if len(first) == 0 {
		t.Fatal("no audit entries to prune")
	}

	clock.Advance(48 * time.Hour)
	cutoff := clock.Now().Add(-24 * time.Hour)
	loadCaddy(t, config("2h")) // a changed config: a new generation starts
	root := login(t, base, "root", "root-password-1")

	// Pruning runs in the background right after the start, before or
	// after the login: the clock stands still, so the order of the two
	// entries is the order they were written in.
	deadline := time.Now().Add(10 * time.Second)
	var log []entry
	prune := -1
	for prune < 0 && time.Now().Before(deadline) {
		log = auditLog(root)
		prune = slices.IndexFunc(log, func(e entry) bool { return e.Action == "audit_prune" })
		time.Sleep(20 * time.Millisecond)
	}
	if len(log) != 2 || prune < 0 || log[1-prune].Action != "login" {
		t.Fatalf("audit log after pruning = %+v; want the new login and the prune record", log)
	}
	if want := fmt.Sprintf("deleted %d entries", len(first)); !strings.Contains(log[prune].Detail, want) {
		t.Fatalf("prune record says %q; want %q", log[prune].Detail, want)
	}
	for _, e := range log {
		if e.Time.Before(cutoff) {
			t.Fatalf("an entry older than the retention survived: %+v", e)
		}
	}
}
