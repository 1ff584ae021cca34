package caddymodule_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestCaddyfileExample runs the repo's Caddyfile.example, changed only
// where a test must (the test binary's admin endpoint, ports of the
// test's own instead of 8080 and 9080, a temporary storage_path), and
// follows the README's walk-through against it.
func TestCaddyfileExample(t *testing.T) {
	t.Setenv("API_TOKENS_ADMIN", "admin")
	t.Setenv("API_TOKENS_ADMIN_PASSWORD", "choose-a-long-password")
	src, err := os.ReadFile(filepath.Join(testtools.RepoRoot(t), "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"localhost:8080", "localhost:9080"} {
		if !strings.Contains(string(src), addr) {
			t.Fatalf("Caddyfile.example no longer serves %s; update this test and the README", addr)
		}
	}
	port, upstream := freePort(t), freePort(t)
	example := strings.NewReplacer(
		"localhost:8080", fmt.Sprintf("localhost:%d", port),
		"localhost:9080", fmt.Sprintf("localhost:%d", upstream),
	).Replace(string(src))
	adapted, err := adapt(t, example)
	if err != nil {
		t.Fatalf("Caddyfile.example does not adapt: %v", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["admin"] = map[string]any{"listen": adminEndpoint, "config": map[string]any{"persist": false}}
	apps := cfg["apps"].(map[string]any)
	apps["api_tokens"].(map[string]any)["storage_path"] = filepath.Join(t.TempDir(), "api_tokens")
	config, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	loadConfig(t, "application/json", string(config))

	base := fmt.Sprintf("http://localhost:%d/api-tokens", port)
	gateway := fmt.Sprintf("http://localhost:%d", port)
	admin := login(t, base, "admin", "choose-a-long-password")
	ci := createUserWithToken(t, base, admin, "ci-bot", "github-actions")

	resp := send(t, http.MethodGet, gateway+"/hello", "Bearer "+ci.Token, nil)
	body := string(resp.body)
	if resp.status != http.StatusOK || !strings.Contains(body, "hello ci-bot") ||
		!strings.Contains(body, ci.ID+" (permanent)") || !strings.Contains(body, `seen by the upstream: ""`) {
		t.Errorf("the demo upstream answered %d:\n%s", resp.status, body)
	}
	wantUnauthorized(t, send(t, http.MethodGet, gateway+"/hello", "", nil), false)
	if resp := send(t, http.MethodGet, gateway+"/admin-only/", "Bearer "+ci.Token, nil); resp.status != http.StatusForbidden {
		t.Errorf("/admin-only/ with ci-bot's token: %d, want 403", resp.status)
	}
	if resp := send(t, http.MethodGet, gateway+"/admin-only/", "Bearer "+admin, nil); resp.status != http.StatusOK || string(resp.body) != "hello administrator admin" {
		t.Errorf("/admin-only/ with the admin's token: %d %q", resp.status, resp.body)
	}

	t.Run("no gaps next to the admin-only route", func(t *testing.T) {
		checkAdminOnlyVariants(t, fmt.Sprintf("localhost:%d", port), ci.Token, admin)
	})
}

// checkAdminOnlyVariants sends, byte for byte as written, the paths that
// an upstream may read as /admin-only even though Caddy does not (Tomcat
// drops ";..." segments, IIS reads "\" as "/" and ignores trailing dots
// and spaces): each must be refused to a non-admin's token, never reach
// the general route. Paths with ";", "\" or NUL elsewhere are refused to
// everyone.
func checkAdminOnlyVariants(t *testing.T, addr, userToken, adminToken string) {
	t.Helper()
	for _, path := range []string{
		"/admin-only", "/admin-only/", "/admin-only/x", "/ADMIN-ONLY/x", "/Admin-Only",
		"/admin-only;x", "/admin-only;jsessionid=1/x", "/admin-only%3Bx/x",
		`/admin-only\x`, `/admin-only\`, "/admin-only%5Cx", "/admin-only%5C",
		"/admin-only%00", "/admin-only%00/x",
		"/admin-only.", "/admin-only./x", "/admin-only..", "/admin-only%2E",
		"/admin-only%20", "/admin-only%20/x", "/admin-only./%20",
		"/./admin-only", "//admin-only", "/x/../admin-only", "/%61dmin-only",
	} {
		if got := rawStatus(t, addr, path, userToken); got != http.StatusForbidden {
			t.Errorf("GET %s with a non-admin token: %d, want 403", path, got)
		}
	}
	if got := rawStatus(t, addr, "/admin-only", adminToken); got != http.StatusOK {
		t.Errorf("GET /admin-only with the admin's token: %d, want 200", got)
	}
	for _, path := range []string{"/x;y", "/x;y/admin-only", `/x\admin-only`, "/x%5Cadmin-only", "/x%00"} {
		for _, token := range []string{userToken, adminToken} {
			if got := rawStatus(t, addr, path, token); got != http.StatusBadRequest {
				t.Errorf("GET %s: %d, want 400", path, got)
			}
		}
	}
}

// rawStatus sends GET target exactly as given (no client-side cleaning or
// escaping) and returns the status.
func rawStatus(t *testing.T, addr, target, token string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, addr, token)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	res.Body.Close()
	return res.StatusCode
}
