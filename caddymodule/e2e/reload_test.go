package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/goleak"

	_ "github.com/apitokens/caddy-api-tokens/caddymodule"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestReloadsUnderLoadLeakNothing runs Caddy in this process, sends
// gateway and admin API traffic from several clients without pause, and
// reloads a changed config five times meanwhile, the way `caddy reload`
// does. No request fails, every generation serves, nothing logs an error
// (a second open of the database would: it is locked), and once Caddy is
// stopped no goroutine is left behind (goleak), so reloads cannot pile up
// alert loops, flushers or Badger workers.
func TestReloadsUnderLoadLeakNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	work := t.TempDir()
	port := freePort(t)
	logFile := filepath.Join(work, "caddy.log")
	dir := filepath.Join(work, "db")
	t.Setenv("E2E_ADMIN", adminUser)
	t.Setenv("E2E_ADMIN_PASSWORD", adminPassword)
	load := func(generation int) {
		t.Helper()
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	default_bind 127.0.0.1
	log {
		output file %s
		format json
		level DEBUG
	}
	api_tokens {
		storage_path %s
		bootstrap_admin {env.E2E_ADMIN} {env.E2E_ADMIN_PASSWORD}
		session_ttl %dh
		alert_interval 1m
	}
}
http://127.0.0.1:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "generation %d" 200
	}
}
`, logFile, dir, 12+generation, port, generation)
		cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
		if err != nil {
			t.Fatalf("adapting config %d: %v %v", generation, err, warnings)
		}
		if err := caddy.Load(cfg, true); err != nil {
			t.Fatalf("loading config %d: %v", generation, err)
		}
		// Load returns while the old server may still listen; once it
		// does not, every new connection reaches this generation.
		testtools.WaitSoleListeners(t, os.Getpid())
	}
	load(0)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = caddy.Stop()
		}
	})
	s := &site{t: t, port: port}
	waitServing(t, s, "generation 0")
	root := s.login(adminUser, adminPassword)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	s.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)

	// Clients reuse keep-alive connections, as real ones do. A reload
	// closes the old server's idle connections, and HTTP/1.1 has an
	// inherent race there: a request written just as the server closes an
	// idle connection gets a reset and no answer. A new connection that
	// reaches the old server just as it stops is likewise reset or closed
	// unanswered (Caddy's handover of the port, see README.md,
	// Operations). RFC 9110 (9.2.2) lets a client resend an idempotent
	// request then, and Go's transport does for most cases; the rest are
	// resent once here, as soon as the old server no longer listens. Only
	// a request that got no answer twice, or a wrong answer, is a failure,
	// and each reload can drop each client's request at most once.
	transport := &http.Transport{MaxIdleConnsPerHost: 8}
	lc := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	var served, resent atomic.Int64
	var mu sync.Mutex
	var failures []string
	generations := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	request := func(url, token string, want int) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := lc.Do(req)
		if err != nil {
			resent.Add(1)
			if err := testtools.AwaitSoleListeners(os.Getpid(), 10*time.Second); err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			resp, err = lc.Do(req)
		}
		if err != nil {
			mu.Lock()
			failures = append(failures, err.Error())
			mu.Unlock()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if resp.StatusCode != want {
			failures = append(failures, fmt.Sprintf("GET %s: %d %s", url, resp.StatusCode, body))
			return
		}
		if bytes.HasPrefix(body, []byte("generation ")) {
			generations[string(body)]++
		}
		served.Add(1)
	}
	const clients, reloads = 3, 5
	for range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				request(s.gateway(), tok.Token, http.StatusOK)
				request(s.base()+"/me", tok.Token, http.StatusOK)
				request(s.gateway(), "caddy_pat_not-a-token", http.StatusUnauthorized)
			}
		})
	}
	waitServed := func(n int64) {
		t.Helper()
		target := served.Load() + n
		deadline := time.Now().Add(20 * time.Second)
		for served.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("load stalled at %d requests", served.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for g := 1; g <= reloads; g++ {
		waitServed(50)
		load(g)
	}
	waitServed(50)
	close(stop)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during %d reloads; first: %v", len(failures), served.Load()+int64(len(failures)), reloads, failures[0])
	}
	for g := 0; g <= reloads; g++ {
		if generations[fmt.Sprintf("generation %d", g)] == 0 {
			t.Errorf("generation %d served no request: %v", g, generations)
		}
	}
	if resent.Load() > clients*reloads {
		t.Errorf("%d requests had to be resent, more than one per client and reload", resent.Load())
	}
	t.Logf("%d requests served across %d reloads, %d resent after a dropped one: %v", served.Load(), reloads, resent.Load(), generations)
	// The data is intact after the reloads.
	if a := s.gatewayAs(tok.Token); a.status != http.StatusOK || string(a.body) != fmt.Sprintf("generation %d", reloads) {
		t.Errorf("after the reloads: %s", a)
	}

	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping Caddy: %v", err)
	}
	stopped = true
	transport.CloseIdleConnections()
	logs, _ := os.ReadFile(logFile)
	for line := range strings.SplitSeq(string(logs), "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, "in use by another process") {
			t.Errorf("Caddy logged an error during the reloads: %s", line)
		}
	}
	if strings.Count(string(logs), "opened token database") != 1 {
		t.Errorf("the database was opened %d times across reloads, want once", strings.Count(string(logs), "opened token database"))
	}
	// Two goroutines belong to Caddy's dependencies, exist once however many
	// reloads there were, and are not ours to stop: the log file's rotation
	// helper (one per log file, for the life of the process) and certmagic's
	// refresher of the storage-cleaning lock, which exits on its own at its
	// next tick after the lock is released.
	if err := goleak.Find(before,
		goleak.IgnoreTopFunction("github.com/DeRuina/timberjack.(*Logger).millRun"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	); err != nil {
		t.Errorf("goroutines left after the reloads and stop: %v", err)
	}
}

// waitServing waits until the in-process Caddy answers with want.
func waitServing(t *testing.T, s *site, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, s.gateway(), nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("Caddy did not serve %q in time", want)
}
