package caddymodule_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
)

// readmeScopesExample returns the Caddyfile of the README's worked example
// of scopes ("a CI token that may only deploy"), as written.
func readmeScopesExample(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "**Worked example: a CI token that may only deploy.**")
	if !ok {
		t.Fatal("README.md has no worked example of scopes; update this test with it")
	}
	_, rest, _ = strings.Cut(rest, "```caddyfile\n")
	example, _, _ := strings.Cut(rest, "```")
	return example
}

// TestREADMEScopesExample runs the README's worked example: its Caddyfile
// with the host names made local and a store and an administrator added,
// then its steps: a CI user and a token that may only deploy, the
// deploy route in shadow mode (a token without deploy passes, and is
// counted), a write refused with the RFC 6750 challenge, and the deploy
// route enforced after the reload.
func TestREADMEScopesExample(t *testing.T) {
	upstream, site := freePort(t), freePort(t)
	example := readmeScopesExample(t)
	local := strings.NewReplacer(
		"api.example.com {", fmt.Sprintf("http://localhost:%d {", site),
		"app:8080", fmt.Sprintf("localhost:%d", upstream),
		"deployer:8080", fmt.Sprintf("localhost:%d", upstream),
		"\tapi_tokens {\n", globalOptions+"\tapi_tokens {\n\t\tstorage_path "+t.TempDir()+"\n\t\tbootstrap_admin admin admin-password-1\n",
	)
	config := local.Replace(example) + fmt.Sprintf("http://localhost:%d {\n\trespond \"upstream: {http.request.header.X-Auth-Scopes}\"\n}\n", upstream)
	loadCaddy(t, config)
	base := fmt.Sprintf("http://localhost:%d", site)
	adminAPI := base + "/api-tokens"
	admin := login(t, adminAPI, "admin", "admin-password-1")
	shadowBefore := shadowCounts(t)["deploy"]

	api(t, adminAPI, admin, http.MethodPost, "/users", map[string]any{
		"username": "ci-bot", "email": "ci@example.com", "password": "ci-bot-password-1", "scopes": []string{"deploy", "reports:read"},
	}, http.StatusCreated, nil)
	// The README's network is the CI runners'; here the runner is loopback.
	var ci tokenView
	api(t, adminAPI, admin, http.MethodPost, "/users/ci-bot/tokens", map[string]any{
		"name": "deploy-pipeline", "scopes": []string{"deploy"}, "allowed_cidrs": []string{"127.0.0.0/8"},
	}, http.StatusCreated, &ci)
	var reader tokenView
	api(t, adminAPI, admin, http.MethodPost, "/users/ci-bot/tokens", map[string]any{"name": "reports", "scopes": []string{"reports:read"}}, http.StatusCreated, &reader)

	if resp := send(t, http.MethodPost, base+"/deploy/now", "Bearer "+ci.Token, nil); resp.status != http.StatusOK {
		t.Errorf("the deploy token on /deploy/: %d %s", resp.status, resp.body)
	}
	if resp := send(t, http.MethodPost, base+"/deploy/now", "Bearer "+reader.Token, nil); resp.status != http.StatusOK {
		t.Errorf("shadow mode refused a token without deploy: %d %s", resp.status, resp.body)
	}
	if got := shadowCounts(t)["deploy"] - shadowBefore; got != 1 {
		t.Errorf("api_tokens_scope_shadow_refusals_total{scope=deploy} rose by %v, want 1", got)
	}
	wantScopeRefusal(t, send(t, http.MethodPost, base+"/reports/42", "Bearer "+ci.Token, nil), "reports:write")
	if resp := send(t, http.MethodGet, base+"/reports/42", "Bearer "+reader.Token, nil); resp.status != http.StatusOK || string(resp.body) != "upstream: reports:read" {
		t.Errorf("a reports:read token reading: %d %q", resp.status, resp.body)
	}

	// Enforce: the same config without `scope_mode shadow`.
	enforced := strings.Replace(config, "scope_mode shadow", "", 1)
	if enforced == config {
		t.Fatal("the README's example has no scope_mode shadow line")
	}
	loadCaddy(t, enforced)
	wantScopeRefusal(t, send(t, http.MethodPost, base+"/deploy/now", "Bearer "+reader.Token, nil), "deploy")
	if resp := send(t, http.MethodPost, base+"/deploy/now", "Bearer "+ci.Token, nil); resp.status != http.StatusOK {
		t.Errorf("the deploy token once enforced: %d %s", resp.status, resp.body)
	}
}
