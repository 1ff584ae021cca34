package caddymodule_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

// TestGatewayErrorRoutes checks use_handle_errors through a real Caddy:
// refusals become Caddy errors with their true status, so the site's
// handle_errors routes write the answer (and see 403, not 401, for
// require_admin), while the challenge header, the counters, the access log
// and a valid token's way through are as without it.
func TestGatewayErrorRoutes(t *testing.T) {
	dataDir, logDir := t.TempDir(), t.TempDir()
	accessLog := filepath.Join(logDir, "access.log")
	adminPort, sitePort, noRoutesPort := freePort(t), freePort(t), freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin root root-password-1
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
http://localhost:%d {
	log {
		output file %s
	}
	handle /admin/* {
		api_token_auth {
			require_admin
			use_handle_errors
		}
		respond "admin area: {http.auth.user.id}" 200
	}
	handle {
		api_token_auth {
			use_handle_errors
		}
		respond "hello {http.auth.user.id}" 200
	}
	handle_errors {
		respond "error route: {err.status_code} {err.message}; candidate {http.auth.candidate.id}"
	}
}
http://localhost:%d {
	api_token_auth {
		use_handle_errors
	}
	respond "hello"
}
`, globalOptions, dataDir, adminPort, sitePort, accessLog, noRoutesPort))

	var (
		adminAPI  = fmt.Sprintf("http://localhost:%d/api-tokens", adminPort)
		site      = fmt.Sprintf("http://localhost:%d/app", sitePort)
		adminArea = fmt.Sprintf("http://localhost:%d/admin/x", sitePort)
		noRoutes  = fmt.Sprintf("http://localhost:%d/", noRoutesPort)
	)
	root := login(t, adminAPI, "root", "root-password-1")
	alice := createUserWithToken(t, adminAPI, root, "alice", "ci")
	before := authCounts(t)

	// respond leaves a placeholder that is not set as written: no candidate.
	const noCandidate = "; candidate {http.auth.candidate.id}"
	wantErrorRoute := func(t *testing.T, resp response, status int, body string) {
		t.Helper()
		if resp.status != status || string(resp.body) != body {
			t.Errorf("answer %d %q, want %d %q", resp.status, resp.body, status, body)
		}
	}
	t.Run("no token: the error route answers 401, with the plain challenge", func(t *testing.T) {
		resp := send(t, http.MethodGet, site, "", nil)
		wantUnauthorized(t, resp, false)
		wantErrorRoute(t, resp, 401, "error route: 401 authentication required: send Authorization: Bearer <token>"+noCandidate)
	})
	t.Run("a bad token: the error route answers 401, with invalid_token", func(t *testing.T) {
		resp := send(t, http.MethodGet, site, "Bearer caddy_pat_garbage", nil)
		wantUnauthorized(t, resp, true)
		wantErrorRoute(t, resp, 401, "error route: 401 token is invalid"+noCandidate)
	})
	t.Run("two Authorization headers: the error route answers 401, with invalid_token", func(t *testing.T) {
		resp := sendAuthorizations(t, site, "Bearer "+alice.Token, "Bearer "+alice.Token)
		wantUnauthorized(t, resp, true)
		wantErrorRoute(t, resp, 401, "error route: 401 send one Authorization header, not several"+noCandidate)
	})
	t.Run("require_admin: the error route sees 403 and who was refused", func(t *testing.T) {
		resp := send(t, http.MethodGet, adminArea, "Bearer "+alice.Token, nil)
		wantErrorRoute(t, resp, 403, "error route: 403 this route requires an administrator's API token; candidate alice")
		if c := resp.header.Get("WWW-Authenticate"); c != `Bearer realm="api_tokens", error="insufficient_scope"` {
			t.Errorf("403's challenge is %q; want insufficient_scope", c)
		}
	})
	t.Run("valid tokens pass as without the option", func(t *testing.T) {
		wantErrorRoute(t, send(t, http.MethodGet, site, "Bearer "+alice.Token, nil), 200, "hello alice")
		wantErrorRoute(t, send(t, http.MethodGet, adminArea, "Bearer "+root, nil), 200, "admin area: root")
	})
	t.Run("the access log records the statuses the client saw, and the user", func(t *testing.T) {
		want := []accessLogEntry{{Status: 401}, {Status: 401}, {Status: 401}, {Status: 403}, {Status: 200, UserID: "alice"}, {Status: 200, UserID: "root"}}
		got := accessLogEntries(t, accessLog, len(want))
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("access log entry %d: %+v, want %+v", i, got[i], want[i])
			}
		}
	})
	t.Run("without handle_errors routes Caddy answers the status, with the challenge and no body", func(t *testing.T) {
		resp := send(t, http.MethodGet, noRoutes, "Bearer caddy_pat_garbage", nil)
		wantUnauthorized(t, resp, true)
		if len(resp.body) != 0 {
			t.Errorf("body %q, want none", resp.body)
		}
	})
	t.Run("refusals are counted as without the option", func(t *testing.T) {
		after := authCounts(t)
		for result, want := range map[string]float64{"missing": 1, "malformed": 3, "forbidden": 1, "ok": 2} {
			if d := after[result] - before[result]; d != want {
				t.Errorf("api_tokens_auth_requests_total{result=%q} rose by %v, want %v", result, d, want)
			}
		}
	})
}
