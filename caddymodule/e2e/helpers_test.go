// Package e2e tests the product as an operator runs it: the real Caddy
// binary built with this plugin, started as a process on loopback ports,
// with its database in the test's temp dir, killed with SIGKILL, reloaded,
// backed up and restored with its own command line.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

const (
	adminUser     = "root"
	adminPassword = "root-password-e2e-1"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// site is one running Caddy: its gateway, the admin API mounted at
// /api-tokens, and Caddy's own admin endpoint (for /metrics and /load).
type site struct {
	t        *testing.T
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	port     int
	adminEP  string // host:port of Caddy's admin endpoint
	storage  string
	logFile  string // Caddy's stdout and stderr
	home     string
	waitErr  error
	extraCfg string              // global options
	siteCfg  string              // directives in the site block
	appCfg   string              // options inside the api_tokens block
	logPath  string              // where extraCfg sends Caddy's log, if not to its output
	dsn      string              // a PostgreSQL database instead of Badger in storage
	editCfg  func(string) string // if set, changes the Caddyfile before it is written
}

func (s *site) base() string    { return fmt.Sprintf("http://127.0.0.1:%d/api-tokens", s.port) }
func (s *site) gateway() string { return fmt.Sprintf("http://127.0.0.1:%d/app", s.port) }

// caddyfile is the gateway an operator would write: the admin API under
// /api-tokens, everything else behind api_token_auth. extra goes into the
// global options (e.g. a log block), appExtra into the api_tokens block,
// siteExtra into the site block.
func caddyfile(port int, adminEP, storage, extra, appExtra, siteExtra string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	default_bind 127.0.0.1
	%s
	api_tokens {
		%s
		bootstrap_admin {env.E2E_ADMIN} {env.E2E_ADMIN_PASSWORD}
		%s
	}
}
http://127.0.0.1:%d {
	%s
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "hello {http.auth.user.id}" 200
	}
}
`, adminEP, extra, storage, appExtra, port, siteExtra)
}

// storageOption is the api_tokens storage line of s: its Badger
// directory, or its PostgreSQL database, whose DSN comes from the
// environment as an operator would pass it.
func (s *site) storageOption() string {
	if s.dsn != "" {
		return "storage postgres {\n\t\t\tdsn {env.E2E_DATABASE_URL}\n\t\t}"
	}
	return "storage_path " + s.storage
}

// newSite prepares (but does not start) a Caddy on fresh ports over
// storagePath.
func newSite(t *testing.T, storagePath, extra string) *site {
	t.Helper()
	return &site{
		t: t, port: freePort(t), adminEP: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		storage: storagePath, home: t.TempDir(), extraCfg: extra,
	}
}

// startSite starts Caddy over storagePath and waits until it serves.
func startSite(t *testing.T, storagePath, extra string) *site {
	t.Helper()
	s := newSite(t, storagePath, extra)
	s.start()
	s.waitReady()
	return s
}

// start runs `caddy run` without waiting for it to serve.
func (s *site) start() {
	t := s.t
	t.Helper()
	cfgPath := filepath.Join(s.home, "Caddyfile")
	cfg := caddyfile(s.port, s.adminEP, s.storageOption(), s.extraCfg, s.appCfg, s.siteCfg)
	if s.editCfg != nil {
		cfg = s.editCfg(cfg)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.logFile = filepath.Join(s.home, "caddy.out")
	out, err := os.Create(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(testtools.CaddyBinary(t), "run", "--config", cfgPath, "--adapter", "caddyfile")
	s.cmd.Env = append(caddyEnv(s.home), "E2E_DATABASE_URL="+s.dsn)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		out.Close()
		close(s.done)
	}()
	t.Cleanup(s.kill)
}

// caddyEnv keeps Caddy's data and config dirs inside the test and gives it
// the bootstrap admin through the environment, as an operator would.
func caddyEnv(home string) []string {
	return append(os.Environ(),
		"HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_CONFIG_HOME="+filepath.Join(home, "config"),
		"E2E_ADMIN="+adminUser, "E2E_ADMIN_PASSWORD="+adminPassword,
	)
}

// waitReady waits until Caddy has started every app (it logs "serving
// initial configuration"; apps start in no fixed order, so the gateway may
// answer before the bootstrap admin exists), the gateway answers, and
// Caddy is alone on its ports: freePort's ports were only free a moment
// ago, and Caddy binds with SO_REUSEPORT, so another process on the same
// port would take part of the requests without any error. It fails with
// Caddy's output if Caddy exits or takes too long.
func (s *site) waitReady() {
	t := s.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			t.Fatalf("caddy exited during start-up (%v):\n%s", s.waitErr, s.output())
		default:
		}
		if !strings.Contains(s.output(), "serving initial configuration") {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if resp, err := client.Get(s.gateway()); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				testtools.WaitSoleListeners(t, s.cmd.Process.Pid)
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy did not serve within 30s:\n%s", s.output())
}

// waitExit waits for a Caddy that is expected to fail at start-up and
// returns its output.
func (s *site) waitExit() string {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("caddy kept running, want it to refuse to start:\n%s", s.output())
	}
	if s.waitErr == nil {
		s.t.Fatalf("caddy exited with status 0, want a failure:\n%s", s.output())
	}
	return s.output()
}

// kill ends Caddy with SIGKILL: no shutdown code runs, nothing is flushed.
func (s *site) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// stop ends Caddy gracefully (SIGINT, as Ctrl-C or systemd would).
func (s *site) stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("caddy did not stop on SIGINT:\n%s", s.output())
	}
}

// output is what Caddy printed, followed by its log file if it has one.
func (s *site) output() string {
	b, _ := os.ReadFile(s.logFile)
	if s.logPath != "" {
		l, _ := os.ReadFile(s.logPath)
		b = append(b, l...)
	}
	return string(b)
}

// client opens a new connection per request, so a Caddy that was killed
// and restarted on other ports never sees a stale one.
var client = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// answer is an HTTP response as a test checks it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, bytes.TrimSpace(a.body)) }

// raw sends one request with a raw body and Authorization value.
func raw(t *testing.T, method, url, authorization string, body io.Reader, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// call sends a JSON request to the admin API with a bearer token, checks
// the status and decodes the answer into out (when not nil).
func (s *site) call(token, method, path string, body any, want int, out any) answer {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	a := raw(s.t, method, s.base()+path, auth, rd, "Content-Type", "application/json")
	if a.status != want {
		s.t.Fatalf("%s %s: %s, want %d", method, path, a, want)
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			s.t.Fatalf("%s %s: decoding %s: %v", method, path, a.body, err)
		}
	}
	return a
}

// login returns a session token.
func (s *site) login(user, password string) string {
	s.t.Helper()
	var out struct{ Token string }
	s.call("", http.MethodPost, "/login", map[string]string{"username": user, "password": password}, http.StatusCreated, &out)
	return out.Token
}

// secretToken is a created or rotated permanent token.
type secretToken struct {
	Token string `json:"token"`
	ID    string `json:"id"`
	Name  string `json:"name"`
}

// gatewayAs makes an authenticated request to the protected app.
func (s *site) gatewayAs(token string) answer {
	s.t.Helper()
	return raw(s.t, http.MethodGet, s.gateway(), "Bearer "+token, nil)
}

// runCaddy runs a caddy subcommand (the CLI an operator uses) and returns
// its combined output and error.
func runCaddy(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testtools.CaddyBinary(t), args...)
	cmd.Env = caddyEnv(t.TempDir())
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
