package alerts

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

const mailpitVersion = "v1.33.1"

// mailpit is a running mailpit (a real mail server with an HTTP API) on
// loopback ports.
type mailpit struct {
	smtpPort int
	api      string
}

func startMailpit(t *testing.T) *mailpit {
	t.Helper()
	bin := testtools.GoTool(t, "github.com/axllent/mailpit", mailpitVersion, "mailpit")
	smtpPort, httpPort := freePort(t), freePort(t)
	cmd := exec.Command(bin,
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--database", filepath.Join(t.TempDir(), "mailpit.db"),
		"--smtp-auth-allow-insecure", "--smtp-auth-accept-any")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mailpit: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	m := &mailpit{smtpPort: smtpPort, api: fmt.Sprintf("http://127.0.0.1:%d/api/v1", httpPort)}
	waitFor(t, "mailpit to answer", func() bool {
		if cmd.ProcessState != nil {
			t.Fatalf("mailpit exited:\n%s", log.String())
		}
		resp, err := http.Get(m.api + "/messages")
		if err != nil {
			return false
		}
		resp.Body.Close()
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smtpPort))
		if err != nil {
			return false
		}
		c.Close()
		return resp.StatusCode == http.StatusOK
	})
	return m
}

// freePort finds a loopback port that is free now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (m *mailpit) get(t *testing.T, path string, into any) {
	t.Helper()
	resp, err := http.Get(m.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

type mailpitAddress struct{ Name, Address string }

type mailpitSummary struct {
	ID      string
	Subject string
	From    mailpitAddress
	To      []mailpitAddress
}

// TestDigestThroughMailpit sends a real digest through the real Mailer to
// mailpit, with authentication, and reads it back as a recipient would.
func TestDigestThroughMailpit(t *testing.T) {
	mp := startMailpit(t)
	w := newWorld(t)
	m, err := NewMailer(SMTPConfig{Host: "127.0.0.1", Port: mp.smtpPort, Username: "gateway", Password: "smtp-pass",
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

	var list struct {
		Total    int
		Messages []mailpitSummary
	}
	mp.get(t, "/messages", &list)
	if list.Total != 1 || len(list.Messages) != 1 {
		t.Fatalf("mailpit holds %d messages, want 1", list.Total)
	}
	sum := list.Messages[0]
	if sum.Subject != "[API tokens] 1 permanent token expires soon" {
		t.Errorf("subject %q", sum.Subject)
	}
	if sum.From.Address != "noreply@example.com" || sum.From.Name != "API tokens" {
		t.Errorf("from %+v", sum.From)
	}
	if len(sum.To) != 2 || sum.To[0].Address != "ops@example.com" || sum.To[1].Address != "security@example.com" {
		t.Errorf("to %+v", sum.To)
	}
	var msg struct{ Text string }
	mp.get(t, "/message/"+sum.ID, &msg)
	for _, s := range []string{"user ci-bot", `token "deploy"`, tok.ID, tok.ExpiresAt.Format(dateFormat),
		"6 days left (7-day warning)", "POST /users/ci-bot/tokens", "DELETE /users/ci-bot/tokens/" + tok.ID} {
		if !strings.Contains(msg.Text, s) {
			t.Errorf("message text lacks %q:\n%s", s, msg.Text)
		}
	}
}
