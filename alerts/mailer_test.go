package alerts

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestMailerDeliversWithEachEncryption(t *testing.T) {
	for _, tc := range []struct {
		encryption string
		opts       smtpOptions
		wantTLS    bool
	}{
		{EncryptionNone, smtpOptions{user: "mailer", pass: "s3cret-pw"}, false},
		{EncryptionSTARTTLS, smtpOptions{user: "mailer", pass: "s3cret-pw", startTLS: true}, true},
		{EncryptionTLS, smtpOptions{user: "mailer", pass: "s3cret-pw", implicit: true}, true},
	} {
		t.Run(tc.encryption, func(t *testing.T) {
			srv := startSMTP(t, tc.opts)
			m := mailerFor(t, srv, tc.encryption, "mailer", "s3cret-pw")
			err := m.Send(context.Background(), []string{"ops@example.com", "sec@example.com"}, "Tokens expire", "token ci-deploy expires soon\n")
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			msgs := srv.Messages()
			if len(msgs) != 1 {
				t.Fatalf("server received %d messages, want 1", len(msgs))
			}
			got := msgs[0]
			if got.From != "noreply@example.com" || strings.Join(got.To, ",") != "ops@example.com,sec@example.com" {
				t.Errorf("envelope from %q to %v", got.From, got.To)
			}
			if got.TLS != tc.wantTLS {
				t.Errorf("session encrypted = %v, want %v", got.TLS, tc.wantTLS)
			}
			if got.AuthUser != "mailer" {
				t.Errorf("authenticated as %q, want mailer", got.AuthUser)
			}
			if s := got.Subject(t); s != "Tokens expire" {
				t.Errorf("subject %q", s)
			}
			if b := got.Body(t); !strings.Contains(b, "token ci-deploy expires soon") {
				t.Errorf("body %q", b)
			}
			if !strings.Contains(got.Raw, "Message-Id: <") || !strings.Contains(got.Raw, "Auto-Submitted: auto-generated") {
				t.Errorf("missing Message-Id or Auto-Submitted header:\n%s", got.Raw)
			}
		})
	}
}

func TestMailerWithoutCredentialsSkipsAuth(t *testing.T) {
	srv := startSMTP(t, smtpOptions{})
	if err := mailerFor(t, srv, EncryptionNone, "", "").Send(context.Background(), []string{"ops@example.com"}, "s", "b"); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("received %d messages, want 1", n)
	}
}

// A server (or a man in the middle) that does not offer STARTTLS must not
// get the password or the mail in plaintext.
func TestMailerRefusesPlaintextWhenSTARTTLSIsMissing(t *testing.T) {
	srv := startSMTP(t, smtpOptions{user: "mailer", pass: "s3cret-pw"}) // no STARTTLS offered
	m := mailerFor(t, srv, EncryptionSTARTTLS, "mailer", "s3cret-pw")
	err := m.Send(context.Background(), []string{"ops@example.com"}, "s", "b")
	if err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("Send = %v, want a STARTTLS refusal", err)
	}
	if a := srv.AuthAttempts(); len(a) != 0 {
		t.Errorf("credentials were sent in plaintext: %v", a)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("a message was sent in plaintext")
	}
}

func TestMailerRejectsUntrustedCertificate(t *testing.T) {
	srv := startSMTP(t, smtpOptions{implicit: true})
	m, err := NewMailer(SMTPConfig{Host: srv.Host, Port: srv.Port, Encryption: EncryptionTLS, From: "noreply@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Send(context.Background(), []string{"ops@example.com"}, "s", "b")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Send = %v, want a certificate error", err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("message delivered despite an untrusted certificate")
	}
}

func TestMailerErrorsNeverShowThePassword(t *testing.T) {
	srv := startSMTP(t, smtpOptions{user: "mailer", pass: "right-password"})
	m := mailerFor(t, srv, EncryptionNone, "mailer", "wrong-Pa55word")
	err := m.Send(context.Background(), []string{"ops@example.com"}, "s", "b")
	if err == nil {
		t.Fatal("Send with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-Pa55word") {
		t.Fatalf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), srv.Host) {
		t.Errorf("error %q does not name the server", err)
	}
}

func TestMailerReportsRefusal(t *testing.T) {
	srv := startSMTP(t, smtpOptions{})
	srv.failWith(554)
	err := mailerFor(t, srv, EncryptionNone, "", "").Send(context.Background(), []string{"ops@example.com"}, "s", "b")
	if err == nil || !strings.Contains(err.Error(), "554") {
		t.Fatalf("Send = %v, want the server's 554", err)
	}
}

// A server that accepts the connection and never answers must not hold
// the alert loop past the timeout, nor past a cancelled context.
func TestMailerGivesUpOnASilentServer(t *testing.T) {
	silent := startSilentServer(t)
	m, err := NewMailer(SMTPConfig{Host: "127.0.0.1", Port: silent.port, Encryption: EncryptionNone, From: "noreply@example.com", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Send(context.Background(), []string{"ops@example.com"}, "s", "b")
	if err == nil || !strings.Contains(err.Error(), "200ms timeout") {
		t.Fatalf("Send = %v, want a timeout", err)
	}

	m.cfg.Timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "the second connection", func() bool { return silent.connections() == 2 })
		cancel() // mid-greeting
	}()
	err = m.Send(ctx, []string{"ops@example.com"}, "s", "b")
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Send with a cancelled context = %v", err)
	}
}

func TestNewMailerChecksConfig(t *testing.T) {
	ok := SMTPConfig{Host: "smtp.example.com", From: "API tokens <noreply@example.com>"}
	for name, tc := range map[string]struct {
		edit func(*SMTPConfig)
		want string
	}{
		"no host":            {func(c *SMTPConfig) { c.Host = "" }, "host is required"},
		"bad encryption":     {func(c *SMTPConfig) { c.Encryption = "ssl" }, "encryption must be"},
		"bad port":           {func(c *SMTPConfig) { c.Port = 70000 }, "port must be"},
		"password only":      {func(c *SMTPConfig) { c.Password = "x" }, "needs a username"},
		"bad from":           {func(c *SMTPConfig) { c.From = "not an address" }, "from must be"},
		"from with newlines": {func(c *SMTPConfig) { c.From = "a@example.com\r\nBcc: x@evil.test" }, "from must be"},
	} {
		c := ok
		tc.edit(&c)
		if _, err := NewMailer(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewMailer = %v, want %q", name, err, tc.want)
		}
	}
	for enc, port := range map[string]int{"": 587, EncryptionNone: 25, EncryptionSTARTTLS: 587, EncryptionTLS: 465} {
		c := ok
		c.Encryption = enc
		m, err := NewMailer(c)
		if err != nil {
			t.Fatalf("NewMailer(%q): %v", enc, err)
		}
		if m.cfg.Port != port {
			t.Errorf("encryption %q: default port %d, want %d", enc, m.cfg.Port, port)
		}
	}
}

// TLSConfig from the caller is used but not modified.
func TestMailerDoesNotModifyCallerTLSConfig(t *testing.T) {
	srv := startSMTP(t, smtpOptions{implicit: true})
	caller := &tls.Config{RootCAs: srv.RootCAs}
	m, err := NewMailer(SMTPConfig{Host: srv.Host, Port: srv.Port, Encryption: EncryptionTLS, From: "noreply@example.com", TLSConfig: caller})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), []string{"ops@example.com"}, "s", "b"); err != nil {
		t.Fatal(err)
	}
	if caller.ServerName != "" {
		t.Errorf("caller's TLS config was modified: ServerName %q", caller.ServerName)
	}
}
