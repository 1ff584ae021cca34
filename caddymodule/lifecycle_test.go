package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// reloadConfig is a gateway whose response tells which config generation
// served it.
func reloadConfig(port int, dataDir, generation, bootstrapAdmin string) string {
	return fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin %s
		session_ttl 12h
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "generation %s" 200
	}
}
`, globalOptions, dataDir, bootstrapAdmin, port, generation)
}

// TestReloadKeepsDataAndServes posts a changed config to Caddy's admin
// endpoint, as `caddy reload` does, while requests keep coming: none
// fails, the new config answers, and the data, the database handle and the
// failed-login count carry over; a changed bootstrap_admin creates nobody
// once an admin exists.
func TestReloadKeepsDataAndServes(t *testing.T) {
	dataDir, port := t.TempDir(), freePort(t)
	loadCaddy(t, reloadConfig(port, dataDir, "A", "root root-password-1"))
	var (
		base    = fmt.Sprintf("http://localhost:%d/api-tokens", port)
		gateway = fmt.Sprintf("http://localhost:%d/", port)
	)
	root := login(t, base, "root", "root-password-1")
	alice := createUserWithToken(t, base, root, "alice", "ci")
	if resp := send(t, http.MethodGet, gateway, "Bearer "+alice.Token, nil); string(resp.body) != "generation A" {
		t.Fatalf("before reload: %d %q", resp.status, resp.body)
	}
	// Use up alice's login budget (5 failures by default) before the reload.
	for range 5 {
		api(t, base, "", http.MethodPost, "/login", map[string]string{"username": "alice", "password": "wrong"}, http.StatusUnauthorized, nil)
	}

	// Requests keep coming during the reload; every answer must be 200.
	// A new connection that reaches the old server just as it stops is
	// reset or closed unanswered, before any handler runs (Caddy's
	// handover of the port, see README.md, Operations), so, like any
	// client, a request that got no answer is sent once more, here as
	// soon as the old server no longer listens. Only a second failure, a
	// non-200 answer, or more than one dropped request (the handover
	// happens once) counts.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, retried int
	var failures []string
	wg.Go(func() {
		for i := 0; i < 10_000; i++ { // bounded; told to stop long before
			select {
			case <-stop:
				return
			default:
			}
			status, err := gatewayStatus(gateway, alice.Token)
			if err != nil {
				retried++
				if err := testtools.AwaitSoleListeners(os.Getpid(), 10*time.Second); err != nil {
					failures = append(failures, err.Error())
					continue
				}
				status, err = gatewayStatus(gateway, alice.Token)
			}
			switch {
			case err != nil:
				failures = append(failures, err.Error())
			case status != http.StatusOK:
				failures = append(failures, http.StatusText(status))
			default:
				served++
			}
		}
	})
	status, body := postConfig(t, "text/caddyfile", reloadConfig(port, dataDir, "B", "other other-password-1"))
	close(stop)
	wg.Wait()
	if status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
	if len(failures) > 0 || served == 0 || retried > 1 {
		t.Errorf("during the reload %d requests were served, %d were dropped and resent, and %d failed: %v", served, retried, len(failures), failures)
	}
	t.Logf("during the reload: %d requests served, %d resent after a dropped connection", served, retried)

	if resp := send(t, http.MethodGet, gateway, "Bearer "+alice.Token, nil); resp.status != http.StatusOK || string(resp.body) != "generation B" {
		t.Fatalf("after reload alice's token got %d %q, want 200 from generation B", resp.status, resp.body)
	}
	var users []storage.User
	api(t, base, root, http.MethodGet, "/users", nil, http.StatusOK, &users)
	if !slices.ContainsFunc(users, func(u storage.User) bool { return u.Username == "alice" }) {
		t.Errorf("after reload the users are %+v, want alice among them", users)
	}
	// bootstrap_admin only ever creates the first admin: root exists, so
	// the new config's "other" is not created.
	if slices.ContainsFunc(users, func(u storage.User) bool { return u.Username == "other" }) {
		t.Errorf("the reloaded bootstrap_admin created a second admin: %+v", users)
	}
	api(t, base, "", http.MethodPost, "/login", map[string]string{"username": "alice", "password": "password-of-alice"}, http.StatusTooManyRequests, nil)
	if counts := authCounts(t); counts["ok"] == 0 {
		t.Errorf("after reload /metrics lacks api_tokens_auth_requests_total: %v", counts)
	}
}

// gatewayStatus makes one authenticated request and returns its status.
func gatewayStatus(url, token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestWorksWithoutGlobalOption uses api_token_auth and api_token_admin
// with no api_tokens block at all: the app comes up with its defaults and
// its database under Caddy's data directory.
func TestWorksWithoutGlobalOption(t *testing.T) {
	dataHome := t.TempDir()
	t.Setenv("XDG_DATA_HOME", dataHome)
	port := freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "hello" 200
	}
}
`, globalOptions, port))
	wantUnauthorized(t, send(t, http.MethodGet, fmt.Sprintf("http://localhost:%d/", port), "", nil), false)
	api(t, fmt.Sprintf("http://localhost:%d/api-tokens", port), "", http.MethodPost, "/login", map[string]string{"username": "admin", "password": "guess"}, http.StatusUnauthorized, nil)
	if _, err := os.Stat(filepath.Join(dataHome, "caddy", "api_tokens")); err != nil {
		t.Errorf("the default storage directory was not created: %v", err)
	}
}

// TestInvalidConfigIsRejected loads bad configs over a good one: each is
// refused with a message that names the problem, and the good one keeps
// serving.
func TestInvalidConfigIsRejected(t *testing.T) {
	dataDir, port := t.TempDir(), freePort(t)
	site := fmt.Sprintf(`
http://localhost:%d {
	api_token_auth
	respond "hello" 200
}
`, port)
	loadCaddy(t, fmt.Sprintf("{\n%s\n\tapi_tokens {\n\t\tstorage test {\n\t\t\tpath %s\n\t\t}\n\t}\n}\n%s", globalOptions, dataDir, site))
	for _, tc := range []struct{ name, options, wantErr string }{
		{"lifetime over a year", "permanent_token_lifetime 400d", "permanent_token_lifetime must be between 1h and 365d, got 400d"},
		{"tiny session", "session_ttl 1s", "session_ttl must be between 1m and 365d, got 1s"},
		{"unset env for the bootstrap username", "bootstrap_admin {env.API_TOKENS_TEST_SURELY_UNSET} secret-password", "bootstrap_admin: the username is empty"},
		{"smtp without from", "smtp {\n\t\t\thost localhost\n\t\t}", "smtp: from is required"},
		{"audit retention under a day", "audit_retention 12h", "audit_retention must be between 1d and 36500d, got 12h"},
		{"bad duration", "alert_interval soon", `alert_interval: "soon" is not a duration like 90m, 12h or 30d, at Caddyfile:12`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := fmt.Sprintf("{\n%s\n\tapi_tokens {\n\t\tstorage test {\n\t\t\tpath %s\n\t\t}\n\t\t%s\n\t}\n}\n%s", globalOptions, dataDir, tc.options, site)
			status, body := postConfig(t, "text/caddyfile", config)
			var answer struct{ Error string }
			_ = json.Unmarshal([]byte(body), &answer)
			if status != http.StatusBadRequest || !strings.Contains(answer.Error, tc.wantErr) {
				t.Errorf("loading it answered %d %s, want 400 mentioning %q", status, body, tc.wantErr)
			}
			wantUnauthorized(t, send(t, http.MethodGet, fmt.Sprintf("http://localhost:%d/", port), "", nil), false)
		})
	}
}
