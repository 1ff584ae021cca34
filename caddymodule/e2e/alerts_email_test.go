package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// smtpAppConfig points the api_tokens app at a mailpit without TLS.
func smtpAppConfig(smtpPort int) string {
	return fmt.Sprintf(`alert_interval 1h
		smtp {
			host 127.0.0.1
			port %d
			username gateway
			password {env.E2E_SMTP_PASSWORD}
			encryption none
			from "API tokens <noreply@example.com>"
		}`, smtpPort)
}

// TestExpiryEmailEndToEnd is what a new operator sees: set the two
// settings on the built Caddy, get one email per token and threshold in a
// real mail server, nothing repeated after a restart, and nothing lost
// while the mail server is down.
func TestExpiryEmailEndToEnd(t *testing.T) {
	t.Setenv("E2E_SMTP_PASSWORD", "smtp-secret-e2e")
	mail := testtools.StartMailpit(t, 0)
	dir := t.TempDir()
	s := newSite(t, dir, "")
	s.appCfg = smtpAppConfig(mail.SMTPPort)
	s.start()
	s.waitReady()
	root := s.login(adminUser, adminPassword)

	s.call(root, http.MethodPost, "/users", map[string]any{"username": "ci-bot", "email": "ci@example.com", "password": "ci-bot-password-1"}, http.StatusCreated, nil)
	var soon secretToken
	s.call(root, http.MethodPost, "/users/ci-bot/tokens", map[string]any{
		"name": "deploy", "expires_at": time.Now().UTC().Add(5*24*time.Hour + time.Hour).Format(time.RFC3339),
	}, http.StatusCreated, &soon)

	s.call(root, http.MethodPut, "/settings/"+storage.SettingNotificationEmails, map[string]string{"value": "ops@example.com;security@example.com"}, http.StatusOK, nil)
	s.call(root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30;7"}, http.StatusOK, nil)

	// One email, for the tightest threshold the token is inside (7 days).
	msgs := waitForMessages(t, mail, 1)
	m := msgs[0]
	if got := []string{m.To[0].Address, m.To[1].Address}; !slices.Equal(got, []string{"ops@example.com", "security@example.com"}) {
		t.Errorf("recipients %v", got)
	}
	for _, want := range []string{"ci-bot", `"deploy"`, soon.ID, "5 days left", "POST /users/ci-bot/tokens"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("email lacks %q:\n%s", want, m.Text)
		}
	}
	if strings.Contains(m.Text, soon.Token) {
		t.Fatal("the email contains the token's secret")
	}
	waitForSeries(t, s, `api_tokens_notification_emails_total{result="sent"}`, 1)

	// A restart runs a pass at once; a setting change runs another. Neither
	// repeats the email.
	s.stop()
	s = newSite(t, dir, "")
	s.appCfg = smtpAppConfig(mail.SMTPPort)
	s.start()
	s.waitReady()
	root = s.login(adminUser, adminPassword)
	s.call(root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30;7"}, http.StatusOK, nil)
	waitForSeries(t, s, "api_tokens_expiring_tokens", 1)
	time.Sleep(500 * time.Millisecond) // give a wrong second email time to arrive
	if n := len(mail.Messages(t)); n != 1 {
		t.Fatalf("after a restart mailpit holds %d messages, want still 1", n)
	}

	// The mail server goes down; a second token crosses a threshold. The
	// failure is counted, and the email arrives once the server is back.
	smtpPort := mail.SMTPPort
	mail.Stop()
	var later secretToken
	s.call(root, http.MethodPost, "/users/ci-bot/tokens", map[string]any{
		"name": "nightly", "expires_at": time.Now().UTC().Add(20 * 24 * time.Hour).Format(time.RFC3339),
	}, http.StatusCreated, &later)
	s.call(root, http.MethodPut, "/settings/"+storage.SettingNotificationDays, map[string]string{"value": "30;7"}, http.StatusOK, nil)
	waitForSeries(t, s, `api_tokens_notification_emails_total{result="failed"}`, 1)

	mail = testtools.StartMailpit(t, smtpPort) // same port, empty mailbox
	msgs = waitForMessages(t, mail, 1)         // the loop retries with backoff (first retry after 10s)
	if !strings.Contains(msgs[0].Text, later.ID) || strings.Contains(msgs[0].Text, soon.ID) {
		t.Fatalf("the retried email should name only the new token %s:\n%s", later.ID, msgs[0].Text)
	}
	if strings.Contains(s.output(), "smtp-secret-e2e") {
		t.Fatal("Caddy's log contains the SMTP password")
	}
}

// waitForMessages waits until mailpit holds exactly n messages.
func waitForMessages(t *testing.T, mail *testtools.Mailpit, n int) []testtools.MailpitMessage {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msgs := mail.Messages(t)
		if len(msgs) >= n {
			if len(msgs) > n {
				t.Fatalf("mailpit holds %d messages, want %d", len(msgs), n)
			}
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit holds %d messages after 60s, want %d", len(msgs), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForSeries polls Caddy's /metrics until series is at least min.
func waitForSeries(t *testing.T, s *site, series string, min float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		a := raw(t, http.MethodGet, "http://"+s.adminEP+"/metrics", "", nil)
		for line := range strings.SplitSeq(string(a.body), "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				last = rest
				var v float64
				if _, err := fmt.Sscan(rest, &v); err == nil && v >= min {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s = %q after 30s, want >= %v", series, last, min)
}
