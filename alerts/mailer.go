package alerts

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	simplemail "github.com/xhit/go-simple-mail/v2"
)

// Encryption modes of SMTPConfig.Encryption.
const (
	EncryptionNone     = "none"     // plain SMTP; credentials and mail travel unencrypted
	EncryptionSTARTTLS = "starttls" // plain connection upgraded with STARTTLS, which is required
	EncryptionTLS      = "tls"      // TLS from the first byte (SMTPS, usually port 465)
)

// DefaultSMTPTimeout bounds one send (connect, TLS, auth and data) when
// SMTPConfig.Timeout is zero.
const DefaultSMTPTimeout = 30 * time.Second

// SMTPConfig is the smtp block of the api_tokens app.
type SMTPConfig struct {
	Host string
	// Port defaults to 25 (none), 587 (starttls) or 465 (tls).
	Port int
	// Username and Password are optional; without a username no AUTH is
	// attempted.
	Username, Password string
	// Encryption is none, starttls (the default) or tls.
	Encryption string
	// From is the sender, e.g. "API tokens <noreply@example.com>".
	From string
	// Timeout bounds one send; DefaultSMTPTimeout when zero.
	Timeout time.Duration
	// TLSConfig optionally replaces the TLS settings, e.g. to trust a
	// private CA. Its ServerName defaults to Host. Nil means the system
	// roots and TLS 1.2 or later.
	TLSConfig *tls.Config
}

// Mailer sends plain-text emails through one SMTP server. It is safe for
// concurrent use; each Send uses its own connection.
type Mailer struct {
	cfg      SMTPConfig
	addr     string
	fromAddr string // the bare address of From, for the Message-ID
}

// DefaultSMTPPort returns the usual port of an encryption mode, and false
// for a mode that is not one of Encryption*.
func DefaultSMTPPort(encryption string) (int, bool) {
	switch encryption {
	case EncryptionNone:
		return 25, true
	case EncryptionSTARTTLS:
		return 587, true
	case EncryptionTLS:
		return 465, true
	}
	return 0, false
}

// sameServer reports whether two SMTP settings send through the same
// server the same way: a reload that keeps them keeps backing off after a
// failure, new ones are tried at once.
func sameServer(a, b SMTPConfig) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Username == b.Username && a.Password == b.Password &&
		a.Encryption == b.Encryption && a.From == b.From
}

// NewMailer checks cfg and returns a Mailer. It does not connect: an SMTP
// server that is down at start must not stop the gateway.
func NewMailer(cfg SMTPConfig) (*Mailer, error) {
	if cfg.Host == "" {
		return nil, errors.New("smtp: host is required")
	}
	if cfg.Encryption == "" {
		cfg.Encryption = EncryptionSTARTTLS
	}
	defaultPort, ok := DefaultSMTPPort(cfg.Encryption)
	if !ok {
		return nil, fmt.Errorf("smtp: encryption must be none, starttls or tls (got %q)", cfg.Encryption)
	}
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("smtp: port must be from 1 to 65535 (got %d)", cfg.Port)
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("smtp: a password needs a username")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp: from must be an address like \"API tokens <noreply@example.com>\" (got %q)", cfg.From)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	return &Mailer{cfg: cfg, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), fromAddr: from.Address}, nil
}

// Send delivers one plain-text email to all recipients in one SMTP
// transaction. It gives up when ctx ends or the configured timeout passes;
// it leaves no goroutine or connection behind. Errors name the server but
// never the credentials.
func (m *Mailer) Send(ctx context.Context, to []string, subject, body string) error {
	if len(to) == 0 {
		return errors.New("smtp: no recipients")
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()

	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return m.explain(ctx, err)
	}
	defer raw.Close()
	// One deadline for the whole conversation, and an early close when ctx
	// ends, instead of the library's timeouts (which leave goroutines).
	deadline, _ := ctx.Deadline()
	if err := raw.SetDeadline(deadline); err != nil {
		return fmt.Errorf("smtp %s: %w", m.addr, err)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	conn, guard, err := m.secure(ctx, raw)
	if err != nil {
		return err
	}
	if err := m.deliver(conn, to, subject, body); err != nil {
		if guard != nil && guard.refused() {
			return fmt.Errorf("smtp %s: the server does not offer STARTTLS; refusing to send credentials or mail unencrypted (set encryption none to allow it)", m.addr)
		}
		return m.explain(ctx, err)
	}
	return nil
}

// explain turns a failure into an error that names the server and says
// whether it was the timeout, the caller's cancellation or the server.
func (m *Mailer) explain(ctx context.Context, err error) error {
	// The connection's deadline and ctx's expire together; whichever the
	// failure came from, past the deadline it is the timeout.
	deadline, _ := ctx.Deadline()
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Before(deadline)
	switch {
	case timedOut:
		return fmt.Errorf("smtp %s: no complete answer within the %s timeout: %w", m.addr, m.cfg.Timeout, err)
	case ctx.Err() != nil:
		return fmt.Errorf("smtp %s: %w", m.addr, ctx.Err())
	default:
		return fmt.Errorf("smtp %s: %w", m.addr, err)
	}
}

// secure wraps the TCP connection for the configured encryption.
func (m *Mailer) secure(ctx context.Context, raw net.Conn) (net.Conn, *startTLSGuard, error) {
	switch m.cfg.Encryption {
	case EncryptionTLS:
		tc := tls.Client(raw, m.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, m.explain(ctx, fmt.Errorf("TLS handshake: %w", err))
		}
		return tc, nil, nil
	case EncryptionSTARTTLS:
		g := &startTLSGuard{Conn: raw}
		return g, g, nil
	default:
		return raw, nil, nil
	}
}

func (m *Mailer) tlsConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.cfg.TLSConfig != nil {
		c = m.cfg.TLSConfig.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = m.cfg.Host
	}
	return c
}

// deliver runs the SMTP conversation over conn with go-simple-mail.
func (m *Mailer) deliver(conn net.Conn, to []string, subject, body string) error {
	server := simplemail.NewSMTPClient()
	server.Host = m.cfg.Host
	server.Port = m.cfg.Port
	server.Username = m.cfg.Username
	server.Password = m.cfg.Password
	server.Authentication = simplemail.AuthAuto
	server.Encryption = map[string]simplemail.Encryption{
		EncryptionNone:     simplemail.EncryptionNone,
		EncryptionSTARTTLS: simplemail.EncryptionSTARTTLS,
		EncryptionTLS:      simplemail.EncryptionSSLTLS,
	}[m.cfg.Encryption]
	server.TLSConfig = m.tlsConfig()
	server.CustomConn = conn
	client, err := server.Connect()
	if err != nil {
		return err
	}
	defer client.Close()

	msg := simplemail.NewMSG().
		SetFrom(m.cfg.From).
		AddTo(to...).
		SetSubject(subject).
		AddHeader("Message-ID", m.messageID()).
		AddHeader("Auto-Submitted", "auto-generated"). // RFC 3834: no auto-replies
		SetBody(simplemail.TextPlain, body)
	if msg.Error != nil {
		return msg.Error
	}
	if err := msg.Send(client); err != nil {
		return err
	}
	_ = client.Quit() // the message is accepted; a failed QUIT changes nothing
	return nil
}

func (m *Mailer) messageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	domain := m.fromAddr[strings.LastIndexByte(m.fromAddr, '@')+1:]
	return "<" + hex.EncodeToString(b) + "@" + domain + ">"
}

// startTLSGuard sits under the SMTP client in starttls mode. go-simple-mail
// silently carries on in plaintext when the server does not offer STARTTLS,
// which would send the password and the mail unencrypted to anyone who can
// strip that one line. The guard lets only the greeting through until
// STARTTLS has been sent, and fails any other write.
type startTLSGuard struct {
	net.Conn
	mu      sync.Mutex
	upgrade bool // STARTTLS sent; the TLS handshake follows
	refusal bool
}

var errPlaintextRefused = errors.New("refusing to write before STARTTLS")

func (g *startTLSGuard) Write(b []byte) (int, error) {
	g.mu.Lock()
	if !g.upgrade {
		switch verb, _, _ := bytes.Cut(bytes.ToUpper(b), []byte(" ")); string(bytes.TrimSpace(verb)) {
		case "EHLO", "HELO", "QUIT":
		case "STARTTLS":
			g.upgrade = true
		default:
			g.refusal = true
			g.mu.Unlock()
			return 0, errPlaintextRefused
		}
	}
	g.mu.Unlock()
	return g.Conn.Write(b)
}

func (g *startTLSGuard) refused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refusal
}
