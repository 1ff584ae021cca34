package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestProviderInsideAuthentication runs the JSON configs of the README
// through a real Caddy: the api_token provider inside Caddy's
// authentication handler, alone (the JSON that api_token_auth used to
// adapt to, which must keep working) and next to http_basic (what the
// provider is for), and the api_token_auth handler that replaces it.
func TestProviderInsideAuthentication(t *testing.T) {
	bobHash, err := bcrypt.GenerateFromPassword([]byte("bob-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	respond := func(body string) map[string]any {
		return map[string]any{"handler": "static_response", "status_code": 200, "body": body}
	}
	route := func(path string, handlers ...map[string]any) map[string]any {
		return map[string]any{"match": []any{map[string]any{"path": []string{path}}}, "handle": handlers}
	}
	authentication := func(providers map[string]any) map[string]any {
		return map[string]any{"handler": "authentication", "providers": providers}
	}
	port := freePort(t)
	config := map[string]any{
		"admin": map[string]any{"listen": adminEndpoint, "config": map[string]any{"persist": false}},
		"apps": map[string]any{
			"api_tokens": map[string]any{
				"storage":         map[string]any{"module": "test", "path": filepath.Join(t.TempDir(), "api_tokens")},
				"bootstrap_admin": map[string]string{"username": "root", "password": "root-password-1"},
			},
			"http": map[string]any{"servers": map[string]any{"gateway": map[string]any{
				"listen": []string{fmt.Sprintf("127.0.0.1:%d", port)},
				"routes": []any{
					route("/api-tokens/*",
						map[string]any{"handler": "rewrite", "strip_path_prefix": "/api-tokens"},
						map[string]any{"handler": "api_token_admin"}),
					route("/tokens/*",
						authentication(map[string]any{"api_token": map[string]any{}}),
						respond("hello {http.auth.user.id} ({http.auth.user.token_kind}) authorization={http.request.header.Authorization}")),
					route("/admin-only/*",
						authentication(map[string]any{"api_token": map[string]any{"require_admin": true}}),
						respond("admin area: {http.auth.user.id}")),
					route("/either/*",
						authentication(map[string]any{
							"api_token":  map[string]any{"keep_authorization": true},
							"http_basic": map[string]any{"accounts": []any{map[string]string{"username": "bob", "password": string(bobHash)}}},
						}),
						respond("hello {http.auth.user.id}")),
					route("/handler/*",
						map[string]any{"handler": "api_token_auth", "require_admin": true},
						respond("admin area: {http.auth.user.id}")),
				},
			}}},
		},
	}
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	loadConfig(t, "application/json", string(b))

	base := fmt.Sprintf("http://localhost:%d", port)
	root := login(t, base+"/api-tokens", "root", "root-password-1")
	alice := createUserWithToken(t, base+"/api-tokens", root, "alice", "ci")
	bearer := "Bearer " + alice.Token
	bobBasic := "Basic Ym9iOmJvYi1wYXNzd29yZA==" // bob:bob-password
	before := authCounts(t)

	wantOK := func(t *testing.T, resp response, body string) {
		t.Helper()
		if resp.status != http.StatusOK || string(resp.body) != body {
			t.Errorf("answer %d %q, want 200 %q", resp.status, resp.body, body)
		}
	}

	t.Run("alone: a valid token passes, with the placeholders, without the header", func(t *testing.T) {
		wantOK(t, send(t, http.MethodGet, base+"/tokens/x", bearer, nil), "hello alice (permanent) authorization=")
	})
	t.Run("alone: refusals are 401 with the Bearer challenge", func(t *testing.T) {
		wantUnauthorized(t, send(t, http.MethodGet, base+"/tokens/x", "", nil), false)
		wantUnauthorized(t, send(t, http.MethodGet, base+"/tokens/x", "Basic YWxpY2U6c2VjcmV0", nil), false)
		wantUnauthorized(t, send(t, http.MethodGet, base+"/tokens/x", "Bearer caddy_pat_garbage", nil), true)
		wantUnauthorized(t, sendAuthorizations(t, base+"/tokens/x", bearer, bearer), true)
	})
	t.Run("alone: require_admin still answers 403", func(t *testing.T) {
		resp := send(t, http.MethodGet, base+"/admin-only/x", bearer, nil)
		if resp.status != http.StatusForbidden {
			t.Errorf("status %d %q, want 403", resp.status, resp.body)
		}
		wantJSONError(t, resp, "requires an administrator's API token")
		wantOK(t, send(t, http.MethodGet, base+"/admin-only/x", "Bearer "+root, nil), "admin area: root")
	})
	t.Run("next to http_basic: either credential passes", func(t *testing.T) {
		wantOK(t, send(t, http.MethodGet, base+"/either/x", bearer, nil), "hello alice")
		wantOK(t, send(t, http.MethodGet, base+"/either/x", bobBasic, nil), "hello bob")
	})
	t.Run("next to http_basic: a bad token, a wrong password or both credentials are 401", func(t *testing.T) {
		for name, resp := range map[string]response{
			"garbage token":  send(t, http.MethodGet, base+"/either/x", "Bearer caddy_pat_garbage", nil),
			"wrong password": send(t, http.MethodGet, base+"/either/x", "Basic Ym9iOndyb25n", nil),
			// keep_authorization is set: the upstream would have got both.
			"a token and a password": sendAuthorizations(t, base+"/either/x", bearer, bobBasic),
		} {
			if resp.status != http.StatusUnauthorized {
				t.Errorf("%s: %d %q, want 401", name, resp.status, resp.body)
			}
		}
	})
	t.Run("the api_token_auth handler in JSON", func(t *testing.T) {
		resp := send(t, http.MethodGet, base+"/handler/x", bearer, nil)
		if resp.status != http.StatusForbidden {
			t.Errorf("status %d %q, want 403", resp.status, resp.body)
		}
		wantJSONError(t, resp, "requires an administrator's API token")
		wantOK(t, send(t, http.MethodGet, base+"/handler/x", "Bearer "+root, nil), "admin area: root")
		wantUnauthorized(t, send(t, http.MethodGet, base+"/handler/x", "Bearer caddy_pat_garbage", nil), true)
	})
	t.Run("the provider counts in the same metric", func(t *testing.T) {
		after := authCounts(t)
		// Malformed: alone, garbage and two headers; next to http_basic,
		// garbage and the token sent with a password; the handler, garbage.
		for result, want := range map[string]float64{"malformed": 2 + 2 + 1, "forbidden": 2, "ok": 1 + 1 + 1 + 1} {
			if d := after[result] - before[result]; d != want {
				t.Errorf("api_tokens_auth_requests_total{result=%q} rose by %v, want %v", result, d, want)
			}
		}
		// Missing: alone, none and Basic; next to http_basic, the wrong
		// password, and bob's right one only if caddyauth happened to ask
		// us first (it walks its providers in map order).
		if d := after["missing"] - before["missing"]; d != 3 && d != 4 {
			t.Errorf(`api_tokens_auth_requests_total{result="missing"} rose by %v, want 3 or 4`, d)
		}
	})
}
