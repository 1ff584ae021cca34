package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// scopesGateway is section 7's example gateway: a catalogue, a reports
// route whose writes need reports:write and whose reads need reports:read
// in shadow mode, a deploy route, a route needing two scopes, and an
// unscoped one. The second site trusts loopback as a proxy, so its client
// address comes from X-Forwarded-For; the first does not.
func scopesGateway(storage string, upstream, gateway, behindProxy int) string {
	return fmt.Sprintf(`{
%s
	servers 127.0.0.1:%d {
		trusted_proxies static 127.0.0.1/32
	}
	api_tokens {
		%s
		bootstrap_admin root root-password-1
		scope reports:read "Read reports"
		scope reports:write "Create and change reports"
		scope deploy "Trigger deployments"
	}
}
http://localhost:%d {
	respond "scopes={http.request.header.X-Auth-Scopes} user={http.request.header.X-Auth-User}" 200
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	@write method POST PUT PATCH DELETE
	handle /reports/* {
		api_token_auth @write {
			require_scope reports:write
		}
		api_token_auth {
			require_scope reports:read
			scope_mode shadow
		}
		reverse_proxy localhost:%d {
			header_up X-Auth-Scopes {http.auth.user.scopes}
			header_up X-Auth-User {http.auth.user.id}
		}
	}
	handle /deploy/* {
		api_token_auth {
			require_scope deploy
		}
		respond "deployed by {http.auth.user.id}" 200
	}
	handle /both/* {
		api_token_auth {
			require_scope reports:read deploy
		}
		respond "both" 200
	}
	handle {
		api_token_auth
		respond "open to {http.auth.user.id}" 200
	}
}
http://localhost:%d {
	api_token_auth
	respond "behind a proxy: {http.auth.user.id}" 200
}
`, globalOptions, behindProxy, storage, upstream, gateway, upstream, behindProxy)
}

// tokenView is what the tests read of a token's metadata.
type tokenView struct {
	Token        string   `json:"token"`
	ID           string   `json:"id"`
	Scopes       []string `json:"scopes"`
	AllowedCIDRs []string `json:"allowed_cidrs"`
	LastUsedIP   string   `json:"last_used_ip"`
	ScopeUsage   map[string]struct {
		LastNeededAt  *string `json:"last_needed_at"`
		LastMissingAt *string `json:"last_missing_at"`
	} `json:"scope_usage"`
}

// wantScopeRefusal checks a 403 for missing scopes: RFC 6750's challenge
// and the JSON body, both naming the route's required scopes.
func wantScopeRefusal(t *testing.T, resp response, scopes string) {
	t.Helper()
	if resp.status != http.StatusForbidden {
		t.Fatalf("status %d, want 403; body %s", resp.status, resp.body)
	}
	challenge := `Bearer realm="api_tokens", error="insufficient_scope", scope="` + scopes + `"`
	if got := resp.header.Get("WWW-Authenticate"); got != challenge {
		t.Errorf("WWW-Authenticate = %q, want %q", got, challenge)
	}
	var body map[string]string
	if err := json.Unmarshal(resp.body, &body); err != nil || !reflect.DeepEqual(body, map[string]string{"error": "insufficient_scope", "scope": scopes}) {
		t.Errorf("body %s, want {\"error\":\"insufficient_scope\",\"scope\":%q} (%v)", resp.body, scopes, err)
	}
}

// wantNetworkRefusal checks a 403 for a client outside allowed_cidrs.
func wantNetworkRefusal(t *testing.T, resp response) {
	t.Helper()
	if resp.status != http.StatusForbidden || strings.TrimSpace(string(resp.body)) != `{"error":"network_not_allowed"}` {
		t.Fatalf("%d %s, want 403 {\"error\":\"network_not_allowed\"}", resp.status, resp.body)
	}
	if c := resp.header.Get("WWW-Authenticate"); c != "" {
		t.Errorf("a network refusal carries a challenge %q", c)
	}
}

// wantBadRequest checks a 400 whose message contains want.
func wantBadRequest(t *testing.T, resp response, want string) {
	t.Helper()
	if resp.status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400 (%s); body %s", resp.status, want, resp.body)
	}
	wantJSONError(t, resp, want)
}

// TestScopesAndNetworks walks every rule of section 7 through a real
// Caddy, on Badger and on PostgreSQL.
func TestScopesAndNetworks(t *testing.T) {
	for _, backend := range []string{"badger", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			storage := "storage_path " + t.TempDir()
			if backend == "postgres" {
				storage = "storage postgres {\n\t\t\tdsn " + testtools.PostgresDatabase(t) + "\n\t\t}"
			}
			testScopesAndNetworks(t, storage)
		})
	}
}

func testScopesAndNetworks(t *testing.T, storage string) {
	upstream, gatewayPort, proxiedPort := freePort(t), freePort(t), freePort(t)
	loadCaddy(t, scopesGateway(storage, upstream, gatewayPort, proxiedPort))
	site := fmt.Sprintf("http://localhost:%d", gatewayPort)
	proxied := fmt.Sprintf("http://localhost:%d/", proxiedPort)
	adminAPI := site + "/api-tokens"
	root := login(t, adminAPI, "root", "root-password-1")
	before := authCounts(t)
	shadowBefore := shadowCounts(t)

	api(t, adminAPI, root, http.MethodPost, "/users", map[string]any{
		"username": "ci", "password": "password-of-ci", "scopes": []string{"reports:read", "deploy"},
	}, http.StatusCreated, nil)
	var full tokenView // the user's scopes by default, written out
	api(t, adminAPI, root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "full"}, http.StatusCreated, &full)
	var deployOnly tokenView
	api(t, adminAPI, root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "deploy", "scopes": []string{"deploy"}}, http.StatusCreated, &deployOnly)
	var none tokenView
	api(t, adminAPI, root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "none", "scopes": []string{}}, http.StatusCreated, &none)
	as := func(tok tokenView) string { return "Bearer " + tok.Token }

	t.Run("the catalogue is listed to any authenticated caller", func(t *testing.T) {
		var got []map[string]string
		api(t, adminAPI, none.Token, http.MethodGet, "/scopes", nil, http.StatusOK, &got)
		want := []map[string]string{
			{"name": "reports:read", "description": "Read reports"},
			{"name": "reports:write", "description": "Create and change reports"},
			{"name": "deploy", "description": "Trigger deployments"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GET /scopes = %v, want %v", got, want)
		}
		api(t, adminAPI, "", http.MethodGet, "/scopes", nil, http.StatusUnauthorized, nil)
	})
	t.Run("a token's scopes default to its user's, written out; [] is none", func(t *testing.T) {
		if !slices.Equal(full.Scopes, []string{"deploy", "reports:read"}) || len(full.AllowedCIDRs) != 0 {
			t.Errorf("default token: scopes %v, allowed_cidrs %v; want the user's [deploy reports:read], any network", full.Scopes, full.AllowedCIDRs)
		}
		if len(none.Scopes) != 0 || none.Scopes == nil {
			t.Errorf("token created with scopes []: %v", none.Scopes)
		}
	})
	t.Run("a token with the scope passes; the upstream sees its effective scopes", func(t *testing.T) {
		if resp := send(t, http.MethodGet, site+"/deploy/now", as(deployOnly), nil); resp.status != http.StatusOK || string(resp.body) != "deployed by ci" {
			t.Errorf("deploy token on /deploy/: %d %s", resp.status, resp.body)
		}
		resp := send(t, http.MethodGet, site+"/reports/1", as(full), nil)
		if resp.status != http.StatusOK || string(resp.body) != "scopes=deploy reports:read user=ci" {
			t.Errorf("full token on /reports/: %d %q", resp.status, resp.body)
		}
	})
	t.Run("a missing scope is 403 with RFC 6750's challenge naming the route's scopes", func(t *testing.T) {
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/deploy/now", as(none), nil), "deploy")
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/both/x", as(deployOnly), nil), "deploy reports:read")
		wantScopeRefusal(t, send(t, http.MethodPost, site+"/reports/1", as(full), nil), "reports:write")
		if resp := send(t, http.MethodGet, site+"/both/x", as(full), nil); resp.status != http.StatusOK {
			t.Errorf("token with both scopes on /both/: %d %s", resp.status, resp.body)
		}
	})
	t.Run("unscoped routes take any valid token, scopes or not", func(t *testing.T) {
		if resp := send(t, http.MethodGet, site+"/anything", as(none), nil); resp.status != http.StatusOK {
			t.Errorf("%d %s", resp.status, resp.body)
		}
	})
	t.Run("shadow mode lets the request through, counts and names the scope", func(t *testing.T) {
		resp := send(t, http.MethodGet, site+"/reports/1", as(deployOnly), nil)
		if resp.status != http.StatusOK || string(resp.body) != "scopes=deploy user=ci" {
			t.Fatalf("shadow route: %d %q, want 200", resp.status, resp.body)
		}
		if got := shadowCounts(t)["reports:read"] - shadowBefore["reports:read"]; got != 1 {
			t.Errorf("api_tokens_scope_shadow_refusals_total{scope=reports:read} rose by %v, want 1", got)
		}
	})
	t.Run("administrators hold every declared scope", func(t *testing.T) {
		var rootTok tokenView
		api(t, adminAPI, root, http.MethodPost, "/users/root/tokens", map[string]any{"name": "automation"}, http.StatusCreated, &rootTok)
		if !slices.Equal(rootTok.Scopes, []string{"deploy", "reports:read", "reports:write"}) {
			t.Errorf("an administrator's token by default: %v; want every declared scope", rootTok.Scopes)
		}
		if resp := send(t, http.MethodPost, site+"/reports/1", as(rootTok), nil); resp.status != http.StatusOK {
			t.Errorf("admin token on a reports:write route: %d %s", resp.status, resp.body)
		}
	})
	t.Run("a scope beyond the user's, undeclared or malformed is 400 naming it, and creates nothing", func(t *testing.T) {
		create := func(body map[string]any) response {
			return send(t, http.MethodPost, adminAPI+"/users/ci/tokens", "Bearer "+root, body)
		}
		wantBadRequest(t, create(map[string]any{"name": "w", "scopes": []string{"reports:write"}}), `does not hold scope "reports:write"`)
		wantBadRequest(t, create(map[string]any{"name": "w", "scopes": []string{"deploi"}}), `scope "deploi" is not declared`)
		wantBadRequest(t, create(map[string]any{"name": "w", "scopes": []string{"Deploy!"}}), `scope name "Deploy!"`)
		wantBadRequest(t, create(map[string]any{"name": "w", "scopes": []string{"deploy", "deploy"}}), `"deploy" is listed twice`)
		many := make([]string, 10000)
		for i := range many {
			many[i] = fmt.Sprintf("s%d", i)
		}
		wantBadRequest(t, create(map[string]any{"name": "w", "scopes": many}), "at most 63 scopes")
		wantBadRequest(t, create(map[string]any{"name": "w", "allowed_cidrs": []string{"10.0.0.1/8"}}), "did you mean 10.0.0.0/8")
		wantBadRequest(t, create(map[string]any{"name": "w", "allowed_cidrs": []string{"::ffff:10.0.0.0/104"}}), "write the IPv4 prefix (10.0.0.0/8)")
		wantBadRequest(t, create(map[string]any{"name": "w", "allowed_cidrs": []string{"10.0.0.0"}}), "is not a CIDR prefix")
		wantBadRequest(t, create(map[string]any{"name": "w", "allowed_cidrs": many}), "at most 64 networks")
		var list []tokenView
		api(t, adminAPI, root, http.MethodGet, "/users/ci/tokens", nil, http.StatusOK, &list)
		if len(list) != 3 {
			t.Errorf("ci has %d tokens after the refused requests, want 3", len(list))
		}
		wantBadRequest(t, send(t, http.MethodPost, adminAPI+"/users", "Bearer "+root, map[string]any{
			"username": "bad", "password": "password-of-bad", "scopes": []string{"nope"},
		}), `scope "nope" is not declared`)
	})
	t.Run("narrowing a token refuses at once; widening is 400", func(t *testing.T) {
		var narrowed tokenView
		api(t, adminAPI, root, http.MethodPatch, "/users/ci/tokens/"+full.ID, map[string]any{"scopes": []string{"reports:read"}}, http.StatusOK, &narrowed)
		if !slices.Equal(narrowed.Scopes, []string{"reports:read"}) {
			t.Errorf("after PATCH: %v", narrowed.Scopes)
		}
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/deploy/now", as(full), nil), "deploy")
		wantBadRequest(t, send(t, http.MethodPatch, adminAPI+"/users/ci/tokens/"+full.ID, "Bearer "+root, map[string]any{"scopes": []string{"reports:read", "deploy"}}),
			`does not hold scope "deploy"; scopes can only be removed`)
		wantBadRequest(t, send(t, http.MethodPatch, adminAPI+"/users/ci/tokens/"+full.ID, "Bearer "+root, map[string]any{}), "nothing to change")
		resp := send(t, http.MethodPatch, adminAPI+"/users/ci/tokens/"+full.ID, "Bearer "+full.Token, map[string]any{"scopes": []string{}})
		if resp.status != http.StatusForbidden {
			t.Errorf("a user narrowing their own token: %d, want 403 (administrators only)", resp.status)
		}
	})
	t.Run("taking a scope from the user narrows all their tokens", func(t *testing.T) {
		api(t, adminAPI, root, http.MethodPatch, "/users/ci", map[string]any{"scopes": []string{"reports:read"}}, http.StatusOK, nil)
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/deploy/now", as(deployOnly), nil), "deploy")
		api(t, adminAPI, root, http.MethodPatch, "/users/ci", map[string]any{"scopes": []string{"reports:read", "deploy"}}, http.StatusOK, nil)
		if resp := send(t, http.MethodGet, site+"/deploy/now", as(deployOnly), nil); resp.status != http.StatusOK {
			t.Errorf("scope given back to the user: %d %s", resp.status, resp.body)
		}
	})
	t.Run("login may ask for fewer scopes, not more", func(t *testing.T) {
		var session struct {
			Token  string   `json:"token"`
			Scopes []string `json:"scopes"`
		}
		api(t, adminAPI, "", http.MethodPost, "/login", map[string]any{"username": "ci", "password": "password-of-ci", "scopes": []string{"reports:read"}}, http.StatusCreated, &session)
		if !slices.Equal(session.Scopes, []string{"reports:read"}) {
			t.Errorf("session scopes %v", session.Scopes)
		}
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/deploy/now", "Bearer "+session.Token, nil), "deploy")
		wantBadRequest(t, send(t, http.MethodPost, adminAPI+"/login", "", map[string]any{"username": "ci", "password": "password-of-ci", "scopes": []string{"reports:write"}}),
			`does not hold scope "reports:write"`)
		api(t, adminAPI, "", http.MethodPost, "/login", map[string]any{"username": "ci", "password": "password-of-ci"}, http.StatusCreated, &session)
		if !slices.Equal(session.Scopes, []string{"deploy", "reports:read"}) {
			t.Errorf("a session without scopes asked: %v, want the user's", session.Scopes)
		}
	})
	t.Run("allowed networks: Caddy's client address, trusted proxies honoured, X-Forwarded-For of others ignored", func(t *testing.T) {
		var office tokenView
		api(t, adminAPI, root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "office", "allowed_cidrs": []string{"10.0.0.0/8", "2001:db8::/32"}}, http.StatusCreated, &office)
		if !slices.Equal(office.AllowedCIDRs, []string{"10.0.0.0/8", "2001:db8::/32"}) {
			t.Errorf("allowed_cidrs %v", office.AllowedCIDRs)
		}
		wantNetworkRefusal(t, send(t, http.MethodGet, site+"/anything", as(office), nil))
		// From an untrusted peer, X-Forwarded-For is not the client.
		wantNetworkRefusal(t, sendWithHeaders(t, site+"/anything", as(office), "X-Forwarded-For", "10.1.2.3"))
		// Behind a trusted proxy, it is.
		if resp := sendWithHeaders(t, proxied, as(office), "X-Forwarded-For", "10.1.2.3"); resp.status != http.StatusOK {
			t.Errorf("behind a trusted proxy from 10.1.2.3: %d %s", resp.status, resp.body)
		}
		if resp := sendWithHeaders(t, proxied, as(office), "X-Forwarded-For", "2001:db8::7"); resp.status != http.StatusOK {
			t.Errorf("behind a trusted proxy from 2001:db8::7: %d %s", resp.status, resp.body)
		}
		wantNetworkRefusal(t, sendWithHeaders(t, proxied, as(office), "X-Forwarded-For", "192.0.2.1"))
		// The admin API refuses it the same way.
		if resp := send(t, http.MethodGet, adminAPI+"/me", as(office), nil); resp.status != http.StatusForbidden {
			t.Errorf("admin API from outside the allowed networks: %d %s", resp.status, resp.body)
		}
		// Replacing the networks lets it in from here.
		api(t, adminAPI, root, http.MethodPatch, "/users/ci/tokens/"+office.ID, map[string]any{"allowed_cidrs": []string{"127.0.0.0/8", "::1/128"}}, http.StatusOK, nil)
		if resp := send(t, http.MethodGet, site+"/anything", as(office), nil); resp.status != http.StatusOK {
			t.Errorf("after allowing loopback: %d %s", resp.status, resp.body)
		}
	})
	t.Run("rotation keeps scopes and networks", func(t *testing.T) {
		var rotated tokenView
		api(t, adminAPI, root, http.MethodPost, "/users/ci/tokens/"+deployOnly.ID+"/rotate", map[string]any{}, http.StatusCreated, &rotated)
		if !slices.Equal(rotated.Scopes, []string{"deploy"}) {
			t.Errorf("rotated token's scopes %v, want [deploy]", rotated.Scopes)
		}
		wantScopeRefusal(t, send(t, http.MethodGet, site+"/both/x", as(rotated), nil), "deploy reports:read")
	})
	t.Run("every change is audited", func(t *testing.T) {
		var audit []struct{ Action, Target, Detail string }
		api(t, adminAPI, root, http.MethodGet, "/audit?limit=100", nil, http.StatusOK, &audit)
		want := map[string]string{
			"token_update": "scopes=reports:read (was deploy reports:read)",
			"user_update":  "scopes=reports:read (was deploy reports:read)",
			"token_create": "allowed_cidrs=10.0.0.0/8 2001:db8::/32",
		}
		for action, detail := range want {
			found := false
			for _, e := range audit {
				found = found || e.Action == action && strings.Contains(e.Detail, detail)
			}
			if !found {
				t.Errorf("no %s entry with %q among %+v", action, detail, audit)
			}
		}
	})
	t.Run("refusals are counted by result", func(t *testing.T) {
		after := authCounts(t)
		if n := after["insufficient_scope"] - before["insufficient_scope"]; n != 7 {
			t.Errorf("insufficient_scope rose by %v, want 7", n)
		}
		if n := after["network_not_allowed"] - before["network_not_allowed"]; n != 3 {
			t.Errorf("network_not_allowed rose by %v, want 3", n)
		}
	})
}

// sendWithHeaders makes a GET with an Authorization and extra headers.
func sendWithHeaders(t *testing.T, url, authorization string, kv ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authorization)
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	return do(t, req)
}

// shadowCounts reads api_tokens_scope_shadow_refusals_total by scope.
func shadowCounts(t *testing.T) map[string]float64 {
	t.Helper()
	return metricByLabel(t, `api_tokens_scope_shadow_refusals_total{scope="`)
}

// TestScopeTypoRefusedAtLoad: a route that requires an undeclared scope
// is a config error, in one line that names it, and the running config
// stays.
func TestScopeTypoRefusedAtLoad(t *testing.T) {
	for _, tc := range []struct{ appOptions, route, want string }{
		{`scope deploy "Trigger deployments"`, "require_scope deploi", `require_scope: scope "deploi" is not declared in the api_tokens scope catalogue (declared: deploy)`},
		{`scope deploy "x"` + "\n" + `scope deploy "y"`, "require_scope deploy", `scope "deploy" is declared twice`},
		{`scope Deploy "x"`, "", `scope "Deploy"`},
		{``, "require_scope deploy", `declared: none`},
		{`scope deploy "x"`, "scope_mode shadow", `scope_mode shadow needs require_scope`},
		{`scope deploy "x"`, "require_scope deploy\n\t\tscope_mode audit", `scope_mode must be enforce or shadow, not "audit"`},
	} {
		cfg := fmt.Sprintf(`{
%s
	api_tokens {
		storage_path %s
		%s
	}
}
http://localhost:%d {
	api_token_auth {
		%s
	}
	respond "ok"
}
`, globalOptions, t.TempDir(), tc.appOptions, freePort(t), tc.route)
		status, body := postConfig(t, "text/caddyfile", cfg)
		var answer struct{ Error string }
		json.Unmarshal([]byte(body), &answer)
		if status != http.StatusBadRequest || !strings.Contains(answer.Error, tc.want) {
			t.Errorf("config with %q / %q: %d %s; want 400 saying %q", tc.appOptions, tc.route, status, body, tc.want)
		}
	}
}

// do sends req and reads the answer.
func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// metricByLabel reads, from Caddy's /metrics, the series that start with
// prefix (a metric name and its one label up to the opening quote), by
// the label's value.
func metricByLabel(t *testing.T, prefix string) map[string]float64 {
	t.Helper()
	resp := send(t, http.MethodGet, "http://"+adminEndpoint+"/metrics", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.status, resp.body)
	}
	values := map[string]float64{}
	for line := range strings.SplitSeq(string(resp.body), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		label, value, _ := strings.Cut(rest, `"} `)
		var v float64
		if _, err := fmt.Sscan(value, &v); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		values[label] = v
	}
	return values
}

// The api_token provider inside Caddy's authentication handler takes the
// same scope options, from JSON: a missing scope is the same 403, with
// the challenge; shadow mode passes; the scopes reach the placeholders.
func TestProviderScopes(t *testing.T) {
	port := freePort(t)
	route := func(path string, provider map[string]any) map[string]any {
		return map[string]any{"match": []any{map[string]any{"path": []string{path}}}, "handle": []any{
			map[string]any{"handler": "authentication", "providers": map[string]any{"api_token": provider}},
			map[string]any{"handler": "static_response", "status_code": 200, "body": "scopes={http.auth.user.scopes}"},
		}}
	}
	config, err := json.Marshal(map[string]any{
		"admin": map[string]any{"listen": adminEndpoint, "config": map[string]any{"persist": false}},
		"apps": map[string]any{
			"api_tokens": map[string]any{
				"storage":         map[string]any{"module": "test", "path": t.TempDir()},
				"bootstrap_admin": map[string]string{"username": "root", "password": "root-password-1"},
				"scopes":          []map[string]string{{"name": "deploy", "description": "Trigger deployments"}, {"name": "reports:read", "description": "Read reports"}},
			},
			"http": map[string]any{"servers": map[string]any{"gateway": map[string]any{
				"listen": []string{fmt.Sprintf("127.0.0.1:%d", port)},
				"routes": []any{
					map[string]any{"match": []any{map[string]any{"path": []string{"/api-tokens/*"}}}, "handle": []any{
						map[string]any{"handler": "rewrite", "strip_path_prefix": "/api-tokens"},
						map[string]any{"handler": "api_token_admin"},
					}},
					route("/deploy/*", map[string]any{"require_scope": []string{"deploy"}}),
					route("/reports/*", map[string]any{"require_scope": []string{"reports:read"}, "scope_mode": "shadow"}),
				},
			}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	loadConfig(t, "application/json", string(config))
	base := fmt.Sprintf("http://localhost:%d", port)
	root := login(t, base+"/api-tokens", "root", "root-password-1")
	api(t, base+"/api-tokens", root, http.MethodPost, "/users", map[string]any{"username": "ci", "password": "password-of-ci", "scopes": []string{"deploy"}}, http.StatusCreated, nil)
	var deploy, none tokenView
	api(t, base+"/api-tokens", root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "deploy"}, http.StatusCreated, &deploy)
	api(t, base+"/api-tokens", root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "none", "scopes": []string{}}, http.StatusCreated, &none)

	if resp := send(t, http.MethodGet, base+"/deploy/x", "Bearer "+deploy.Token, nil); resp.status != http.StatusOK || string(resp.body) != "scopes=deploy" {
		t.Errorf("the deploy token: %d %q", resp.status, resp.body)
	}
	wantScopeRefusal(t, send(t, http.MethodGet, base+"/deploy/x", "Bearer "+none.Token, nil), "deploy")
	if resp := send(t, http.MethodGet, base+"/reports/x", "Bearer "+none.Token, nil); resp.status != http.StatusOK || string(resp.body) != "scopes=" {
		t.Errorf("shadow route: %d %q", resp.status, resp.body)
	}
}
