package testtools

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// MailpitVersion is the pinned mailpit, a real SMTP server with an HTTP API.
const MailpitVersion = "v1.33.1"

// Mailpit is a running mailpit on loopback ports, accepting any SMTP login.
type Mailpit struct {
	SMTPPort int
	API      string // base URL of its HTTP API, e.g. http://127.0.0.1:1234/api/v1
	cmd      *exec.Cmd
	log      *lockedBuffer
	stopOnce sync.Once
}

// StartMailpit starts mailpit with its SMTP server on smtpPort (0 picks a
// free one) and waits until both of its ports answer. It is stopped at the
// end of the test.
func StartMailpit(tb testing.TB, smtpPort int) *Mailpit {
	tb.Helper()
	bin := GoTool(tb, "github.com/axllent/mailpit", MailpitVersion, "mailpit")
	if smtpPort == 0 {
		smtpPort = FreePort(tb)
	}
	httpPort := FreePort(tb)
	m := &Mailpit{SMTPPort: smtpPort, API: fmt.Sprintf("http://127.0.0.1:%d/api/v1", httpPort), log: &lockedBuffer{}}
	m.cmd = exec.Command(bin,
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--database", filepath.Join(tb.TempDir(), "mailpit.db"),
		"--smtp-auth-allow-insecure", "--smtp-auth-accept-any")
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		tb.Fatalf("starting mailpit: %v", err)
	}
	tb.Cleanup(m.Stop)
	deadline := time.Now().Add(20 * time.Second)
	for !m.answers() {
		if time.Now().After(deadline) {
			tb.Fatalf("mailpit did not answer within 20s:\n%s", m.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

func (m *Mailpit) answers() bool {
	resp, err := http.Get(m.API + "/messages")
	if err != nil {
		return false
	}
	resp.Body.Close()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.SMTPPort))
	if err != nil {
		return false
	}
	c.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop ends mailpit; its SMTP port refuses connections afterwards.
func (m *Mailpit) Stop() {
	m.stopOnce.Do(func() {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
	})
}

// MailpitMessage is a received message as a recipient sees it.
type MailpitMessage struct {
	ID      string
	Subject string
	From    MailpitAddress
	To      []MailpitAddress
	Text    string
}

// MailpitAddress is one sender or recipient.
type MailpitAddress struct{ Name, Address string }

// Messages returns every message mailpit holds, newest first, with bodies.
func (m *Mailpit) Messages(tb testing.TB) []MailpitMessage {
	tb.Helper()
	var list struct{ Messages []MailpitMessage }
	m.get(tb, "/messages", &list)
	for i := range list.Messages {
		var full struct{ Text string }
		m.get(tb, "/message/"+list.Messages[i].ID, &full)
		list.Messages[i].Text = full.Text
	}
	return list.Messages
}

func (m *Mailpit) get(tb testing.TB, path string, into any) {
	tb.Helper()
	resp, err := http.Get(m.API + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("mailpit GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		tb.Fatalf("mailpit GET %s: %v", path, err)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago, and
// that it has not returned before in this process.
func FreePort(tb testing.TB) int {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may give a port it gave a moment ago, once it is
		// closed: a test that asked for two (a site and its admin
		// endpoint) would then bind both to one port, which Caddy's
		// SO_REUSEPORT allows without an error.
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
}

// handedOut are the ports FreePort has returned in this process.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
