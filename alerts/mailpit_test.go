package alerts

import (
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestDigestThroughMailpit sends a real digest through the real Mailer to
// mailpit, with authentication, and reads it back as a recipient would.
func TestDigestThroughMailpit(t *testing.T) {
	mp := testtools.StartMailpit(t, 0)
	w := newWorld(t)
	m, err := NewMailer(SMTPConfig{Host: "127.0.0.1", Port: mp.SMTPPort, Username: "gateway", Password: "smtp-pass",
		Encryption: EncryptionNone, From: "API tokens <noreply@example.com>", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.mailer = m
	tok := w.token("ci-bot", "deploy", year)
	w.set(storage.SettingNotificationDays, "30;7")
	w.set(storage.SettingNotificationEmails, "ops@example.com;security@example.com")
	w.at(tok, 6*day)
	w.pass()
	w.pass()

	msgs := mp.Messages(t)
	if len(msgs) != 1 {
		t.Fatalf("mailpit holds %d messages, want 1", len(msgs))
	}
	msg := msgs[0]
	if msg.Subject != "[API tokens] 1 permanent token expires soon" {
		t.Errorf("subject %q", msg.Subject)
	}
	if msg.From.Address != "noreply@example.com" || msg.From.Name != "API tokens" {
		t.Errorf("from %+v", msg.From)
	}
	if len(msg.To) != 2 || msg.To[0].Address != "ops@example.com" || msg.To[1].Address != "security@example.com" {
		t.Errorf("to %+v", msg.To)
	}
	for _, s := range []string{"user ci-bot", `token "deploy"`, tok.ID, tok.ExpiresAt.Format(dateFormat),
		"6 days left (7-day warning)", "POST /users/ci-bot/tokens", "DELETE /users/ci-bot/tokens/" + tok.ID} {
		if !strings.Contains(msg.Text, s) {
			t.Errorf("message text lacks %q:\n%s", s, msg.Text)
		}
	}
}
