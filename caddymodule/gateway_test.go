package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// TestGatewayAuthentication walks every rule of api_token_auth (spec
// section 2) through a real Caddy: a gateway that proxies to an upstream
// echoing what it received. The sites have handle_errors routes, which
// must not see the refusals: api_token_auth answers them itself unless
// use_handle_errors is set (TestGatewayErrorRoutes).
func TestGatewayAuthentication(t *testing.T) {
	dataDir, logDir := t.TempDir(), t.TempDir()
	clock := useFakeClock(dataDir)
	accessLog := filepath.Join(logDir, "access.log")
	upstream, gatewayPort, adminOnlyPort, keepAuthPort := freePort(t), freePort(t), freePort(t), freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin root root-password-1
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
	handle_errors {
		respond "the error routes ran" 500
	}
}
http://localhost:%d {
	log {
		output file %s
	}
	api_token_auth {
		require_admin
	}
	respond "admin area" 200
	handle_errors {
		respond "the error routes ran" 500
	}
}
http://localhost:%d {
	api_token_auth {
		keep_authorization
	}
	%s
}
`, globalOptions, dataDir, echoSite(upstream), gatewayPort, proxyWithPlaceholders(upstream), adminOnlyPort, accessLog, keepAuthPort, proxyWithPlaceholders(upstream)))

	var (
		gateway   = fmt.Sprintf("http://localhost:%d/some/path", gatewayPort)
		adminOnly = fmt.Sprintf("http://localhost:%d/", adminOnlyPort)
		keepAuth  = fmt.Sprintf("http://localhost:%d/", keepAuthPort)
		adminAPI  = fmt.Sprintf("http://localhost:%d/api-tokens", gatewayPort)
	)
	root := login(t, adminAPI, "root", "root-password-1")
	alice := createUserWithToken(t, adminAPI, root, "alice", "ci")
	bearer := "Bearer " + alice.Token
	before := authCounts(t)

	t.Run("no Authorization header is 401 with a plain challenge", func(t *testing.T) {
		resp := send(t, http.MethodGet, gateway, "", nil)
		wantUnauthorized(t, resp, false)
		wantJSONError(t, resp, "send Authorization: Bearer <token>")
	})
	t.Run("another scheme is 401 with a plain challenge", func(t *testing.T) {
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Basic YWxpY2U6c2VjcmV0", nil), false)
	})
	t.Run("an empty bearer token is 401 with a plain challenge", func(t *testing.T) {
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer ", nil), false)
	})
	t.Run("malformed token is 401 invalid_token", func(t *testing.T) {
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer not-a-token", nil), true)
		// The right shape with one character changed fails the checksum.
		broken := []byte(alice.Token)
		broken[len(broken)-1] ^= 1
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+string(broken), nil), true)
	})
	t.Run("well-formed unknown token is 401 invalid_token", func(t *testing.T) {
		resp := send(t, http.MethodGet, gateway, "Bearer "+secret.New(storage.Permanent), nil)
		wantUnauthorized(t, resp, true)
		wantJSONError(t, resp, "token is invalid")
	})
	t.Run("two Authorization headers are 401 invalid_token, even when both are valid", func(t *testing.T) {
		resp := sendAuthorizations(t, gateway, bearer, bearer)
		wantUnauthorized(t, resp, true)
		wantJSONError(t, resp, "one Authorization header")
		// With keep_authorization the upstream would have received both.
		wantUnauthorized(t, sendAuthorizations(t, keepAuth, bearer, "Basic YWxpY2U6c2VjcmV0"), true)
	})
	t.Run("the admin API refuses two Authorization headers the same way", func(t *testing.T) {
		resp := sendAuthorizations(t, adminAPI+"/me", "Bearer "+root, "Bearer "+root)
		wantUnauthorized(t, resp, true)
		wantJSONError(t, resp, "one Authorization header")
	})
	t.Run("valid token passes; identity placeholders reach the upstream; Authorization is removed", func(t *testing.T) {
		got := echoed(t, send(t, http.MethodGet, gateway, bearer, nil))
		want := map[string]string{"user": "alice", "token_id": alice.ID, "token_kind": "permanent", "admin": "false", "authorization": ""}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("upstream saw %s=%q, want %q", k, got[k], v)
			}
		}
	})
	t.Run("the scheme name is case-insensitive", func(t *testing.T) {
		for _, scheme := range []string{"bearer", "BEARER", "bEaReR"} {
			if got := echoed(t, send(t, http.MethodGet, gateway, scheme+" "+alice.Token, nil)); got["user"] != "alice" {
				t.Errorf("scheme %q: upstream saw user %q", scheme, got["user"])
			}
		}
	})
	t.Run("keep_authorization passes the header to the upstream", func(t *testing.T) {
		got := echoed(t, send(t, http.MethodGet, keepAuth, bearer, nil))
		if got["authorization"] != bearer || got["user"] != "alice" {
			t.Errorf("upstream saw authorization=%q user=%q, want the caller's header and alice", got["authorization"], got["user"])
		}
	})
	t.Run("a login's temporary token passes with kind temporary", func(t *testing.T) {
		temp := login(t, adminAPI, "alice", "password-of-alice")
		got := echoed(t, send(t, http.MethodGet, gateway, "Bearer "+temp, nil))
		if got["user"] != "alice" || got["token_kind"] != "temporary" {
			t.Errorf("upstream saw user=%q token_kind=%q", got["user"], got["token_kind"])
		}
	})
	t.Run("require_admin answers 403 to a non-admin, and only 403", func(t *testing.T) {
		resp := send(t, http.MethodGet, adminOnly, bearer, nil)
		if resp.status != http.StatusForbidden {
			t.Fatalf("status %d, want 403; body %s", resp.status, resp.body)
		}
		wantJSONError(t, resp, "requires an administrator's API token")
		// Section 7: RFC 6750's insufficient_scope, naming no scope.
		if c := resp.header.Get("WWW-Authenticate"); c != `Bearer realm="api_tokens", error="insufficient_scope"` {
			t.Errorf("403's challenge is %q; want insufficient_scope", c)
		}

		if resp := send(t, http.MethodGet, adminOnly, "Bearer "+root, nil); resp.status != http.StatusOK || string(resp.body) != "admin area" {
			t.Errorf("admin's token: %d %q, want 200 \"admin area\"", resp.status, resp.body)
		}
		wantUnauthorized(t, send(t, http.MethodGet, adminOnly, "", nil), false)

		// The site's first three requests, so the log's first entries:
		// Caddy's access log shows each status, and the user only for the
		// request that was let through.
		want := []accessLogEntry{{Status: 403}, {Status: 200, UserID: "root"}, {Status: 401}}
		got := accessLogEntries(t, accessLog, len(want))
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("access log entry %d: %+v, want %+v", i, got[i], want[i])
			}
		}
	})
	t.Run("expired token is 401 invalid_token", func(t *testing.T) {
		var short newToken
		api(t, adminAPI, root, http.MethodPost, "/users/alice/tokens", map[string]string{
			"name": "short-lived", "expires_at": clock.Now().Add(time.Hour).Format(time.RFC3339),
		}, http.StatusCreated, &short)
		echoed(t, send(t, http.MethodGet, gateway, "Bearer "+short.Token, nil))
		clock.Advance(2 * time.Hour)
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+short.Token, nil), true)
	})
	t.Run("deleted token is 401 on the very next request", func(t *testing.T) {
		var doomed newToken
		api(t, adminAPI, root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "doomed"}, http.StatusCreated, &doomed)
		echoed(t, send(t, http.MethodGet, gateway, "Bearer "+doomed.Token, nil))
		api(t, adminAPI, root, http.MethodDelete, "/users/alice/tokens/"+doomed.ID, nil, http.StatusNoContent, nil)
		wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+doomed.Token, nil), true)
	})
	t.Run("disabled user's token is 401", func(t *testing.T) {
		api(t, adminAPI, root, http.MethodPatch, "/users/alice", map[string]bool{"disabled": true}, http.StatusOK, nil)
		wantUnauthorized(t, send(t, http.MethodGet, gateway, bearer, nil), true)
	})
	t.Run("every decision is counted on Caddy's /metrics", func(t *testing.T) {
		after := authCounts(t)
		// Deleting a token may count as unknown or revoked depending on
		// whether the store keeps a tombstone; together they are one.
		deltas := map[string]float64{
			"missing":           4,                         // none, Basic, empty, none at require_admin
			"malformed":         2 + 2,                     // not-a-token, the changed character; two headers twice
			"ok":                1 + 3 + 1 + 1 + 1 + 1 + 1, // valid, 3 schemes, keep, temporary, admin 200, short-lived, doomed
			"forbidden":         1,
			"expired":           1,
			"disabled":          1,
			"unknown + revoked": 2, // the unknown secret, the deleted token
		}
		got := func(r string) float64 { return after[r] - before[r] }
		for result, want := range deltas {
			var d float64
			if result == "unknown + revoked" {
				d = got("unknown") + got("revoked")
			} else {
				d = got(result)
			}
			if d != want {
				t.Errorf("api_tokens_auth_requests_total{result=%q} rose by %v, want %v", result, d, want)
			}
		}
	})
}

// accessLogEntry is what a test checks of an entry of Caddy's access log.
type accessLogEntry struct {
	Status int    `json:"status"`
	UserID string `json:"user_id"`
}

// accessLogEntries waits (bounded) for the first n entries of Caddy's
// access log at path and returns them: an entry is written right after its
// response, so it can trail the client by a moment.
func accessLogEntries(t *testing.T, path string, n int) []accessLogEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var entries []accessLogEntry
		if b, err := os.ReadFile(path); err == nil {
			for line := range bytes.Lines(b) {
				if line[len(line)-1] != '\n' {
					break // still being written
				}
				var e accessLogEntry
				if err := json.Unmarshal(line, &e); err != nil {
					t.Fatalf("access log entry %q: %v", line, err)
				}
				entries = append(entries, e)
			}
		}
		if len(entries) >= n {
			return entries[:n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log entries in %s after 5s, want %d", len(entries), path, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayChallengeRewrittenOnOneSite: a deferred `header` replacement
// edits response header values in place. The challenge api_token_auth
// sets must be its response's own, so a site that renames the realm
// changes its own answers and no other site's (see headerSlab).
func TestGatewayChallengeRewrittenOnOneSite(t *testing.T) {
	renamingPort, plainPort := freePort(t), freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
	}
}
http://localhost:%d {
	header {
		defer
		Www-Authenticate api_tokens acme
		Content-Type json problem+json
	}
	api_token_auth
	respond "hello"
}
http://localhost:%d {
	api_token_auth
	respond "hello"
}
`, globalOptions, t.TempDir(), renamingPort, plainPort))

	for range 50 {
		renamed := send(t, http.MethodGet, fmt.Sprintf("http://localhost:%d/", renamingPort), "Bearer caddy_pat_garbage", nil)
		if got := renamed.header.Get("WWW-Authenticate"); got != `Bearer realm="acme", error="invalid_token"` {
			t.Fatalf("the renaming site answers challenge %q", got)
		}
		if got := renamed.header.Get("Content-Type"); got != "application/problem+json" {
			t.Fatalf("the renaming site answers Content-Type %q", got)
		}
		resp := send(t, http.MethodGet, fmt.Sprintf("http://localhost:%d/", plainPort), "Bearer caddy_pat_garbage", nil)
		wantUnauthorized(t, resp, true)
		wantJSONError(t, resp, "token is invalid")
	}
}
