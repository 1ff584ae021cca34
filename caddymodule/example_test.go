package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestCaddyfileExample runs the repo's Caddyfile.example, changed only
// where a test must (the test binary's admin endpoint, ports of the
// test's own instead of 8080 and 9080, a temporary storage_path), and
// follows the README's walk-through against it.
func TestCaddyfileExample(t *testing.T) {
	useFakeClock(t)
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
}
