package caddymodule_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestRestartKeepsData runs the real caddy binary with no bootstrap_admin:
// it logs a generated admin password once; the admin creates a user and a
// token; Caddy is killed with SIGKILL right after the 201; a new process
// on the same directory still has the admin, the user and a working token,
// and does not generate another password.
func TestRestartKeepsData(t *testing.T) {
	bin := testtools.CaddyBinary(t)
	dir := t.TempDir()
	caddyfile := filepath.Join(dir, "Caddyfile")
	adminPort, port, upstream := freePort(t), freePort(t), freePort(t)
	config := fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	persist_config off
	default_bind 127.0.0.1
	api_tokens {
		storage_path %s
	}
}
%s
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		%s
	}
}
`, adminPort, filepath.Join(dir, "data"), echoSite(upstream), port, proxyWithPlaceholders(upstream))
	if err := os.WriteFile(caddyfile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	var (
		base    = fmt.Sprintf("http://localhost:%d/api-tokens", port)
		gateway = fmt.Sprintf("http://localhost:%d/", port)
	)

	first := startCaddyProcess(t, bin, caddyfile, dir, gateway)
	password := first.generatedPassword(t)
	adminToken := login(t, base, "admin", password)
	bob := createUserWithToken(t, base, adminToken, "bob", "nightly")
	first.kill(t) // right after the 201: what was acknowledged must be on disk

	second := startCaddyProcess(t, bin, caddyfile, dir, gateway)
	adminToken = login(t, base, "admin", password)
	if got := echoed(t, send(t, http.MethodGet, gateway, "Bearer "+bob.Token, nil)); got["user"] != "bob" || got["token_id"] != bob.ID {
		t.Errorf("after restart bob's token reached the upstream as %v", got)
	}
	resp := send(t, http.MethodGet, base+"/users/bob/tokens", "Bearer "+adminToken, nil)
	if resp.status != http.StatusOK || !strings.Contains(string(resp.body), `"name":"nightly"`) {
		t.Errorf("after restart bob's tokens: %d %s", resp.status, resp.body)
	}
	// The logged line says how to change the generated password; doing
	// exactly that works.
	if !first.logs.has(`PATCH /users/admin {\"password\": \"<new>\", \"current_password\": \"<this one>\"}`) {
		t.Errorf("the generated-password line does not say to send current_password:\n%s", first.logs.String())
	}
	resp = send(t, http.MethodPatch, base+"/users/admin", "Bearer "+adminToken,
		map[string]string{"password": "a-new-long-password-1", "current_password": password})
	if resp.status != http.StatusOK {
		t.Fatalf("changing the generated password as the log line says: %d %s", resp.status, resp.body)
	}
	login(t, base, "admin", "a-new-long-password-1")
	second.stop(t)
	if second.logs.has(generatedPasswordMsg) {
		t.Errorf("the second start generated another admin password:\n%s", second.logs.String())
	}
}

// generatedPasswordMsg starts the one-time WARN line with the password.
const generatedPasswordMsg = "no admin existed and bootstrap_admin is not set"

type caddyProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

// startCaddyProcess runs `caddy run` and waits until the gateway answers
// and the process listens alone on its ports (so the requests that follow
// reach it and not another process that binds the same ports). Caddy's own
// data and config dirs go to dir, away from the user's.
func startCaddyProcess(t *testing.T, bin, caddyfile, dir, gateway string) *caddyProcess {
	t.Helper()
	p := &caddyProcess{logs: new(syncBuffer), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := httpClient.Get(gateway); err == nil {
			resp.Body.Close()
			testtools.WaitSoleListeners(t, p.cmd.Process.Pid)
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("caddy exited during start-up:\n%s", p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not serve within 60s:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// generatedPassword finds the password in the one-time WARN log line.
func (p *caddyProcess) generatedPassword(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
		for sc.Scan() {
			var entry struct {
				Level, Msg, Username, Password string
			}
			if json.Unmarshal(sc.Bytes(), &entry) == nil && strings.HasPrefix(entry.Msg, generatedPasswordMsg) {
				if entry.Level != "warn" || entry.Username != "admin" || len(entry.Password) < 16 {
					t.Fatalf("generated admin logged as %s", sc.Bytes())
				}
				return entry.Password
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no generated admin password in the log:\n%s", p.logs.String())
	return ""
}

// kill ends Caddy with SIGKILL: no shutdown hook runs.
func (p *caddyProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// stop asks Caddy to shut down gracefully and checks that it does.
func (p *caddyProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("caddy did not stop within 30s of SIGTERM:\n%s", p.logs.String())
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("caddy exited with %v:\n%s", p.cmd.ProcessState, p.logs.String())
	}
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) has(s string) bool { return strings.Contains(b.String(), s) }
