package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/admin/cli"
	"github.com/apitokens/caddy-api-tokens/admin/client"
	"github.com/apitokens/caddy-api-tokens/caddymodule"
)

// cliRun is one run of `caddy api-tokens ...` as a user sees it.
type cliRun struct {
	code           int
	stdout, stderr string
}

func (r cliRun) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// runCLI runs the CLI's commands in-process with stdin and environment
// variables (pairs), with its HTTP checked against the OpenAPI document.
func runCLI(t *testing.T, stdin string, env []string, args ...string) cliRun {
	t.Helper()
	return runCLIAt(t, nil, stdin, env, args...)
}

// runCLIAt is runCLI with the CLI's clock set to now (nil: the real one),
// for a gateway on a fake clock.
func runCLIAt(t *testing.T, now func() time.Time, stdin string, env []string, args ...string) cliRun {
	t.Helper()
	var out, errOut bytes.Buffer
	vars := map[string]string{}
	for i := 0; i+1 < len(env); i += 2 {
		vars[env[i]] = env[i+1]
	}
	code := cli.Execute(&cli.Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Getenv:     func(k string) string { return vars[k] },
		HTTPClient: adminContract(t).Client(t, httpClient),
		Now:        now,
	}, args)
	return cliRun{code, out.String(), errOut.String()}
}

func wantRun(t *testing.T, r cliRun, code int, stdoutHas, stderrHas string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout, stdoutHas) || !strings.Contains(r.stderr, stderrHas) {
		t.Errorf("want exit %d, stdout with %q, stderr with %q; got %s", code, stdoutHas, stderrHas, r)
	}
}

// TestCLIThroughCaddy runs the seed's flows with `caddy api-tokens`
// against a real Caddy: log in, create a user and its permanent token,
// list, rotate before expiry, set the notification settings, list faults
// and the audit log, delete, log out; then the bad input an operator
// makes, each with a clear message and its exit code.
func TestCLIThroughCaddy(t *testing.T) {
	t.Setenv("API_TOKENS_TEST_ADMIN", "ops-admin")
	t.Setenv("API_TOKENS_TEST_ADMIN_PASSWORD", "cli-admin-password-1")
	port := freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin {env.API_TOKENS_TEST_ADMIN} {env.API_TOKENS_TEST_ADMIN_PASSWORD}
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "hello {http.auth.user.id}" 200
	}
}
`, globalOptions, t.TempDir(), port))
	site := fmt.Sprintf("http://localhost:%d", port)
	base := site + "/api-tokens"
	dir := t.TempDir()
	session := filepath.Join(dir, "session.token")
	urlEnv := []string{cli.EnvURL, base}
	as := []string{cli.EnvURL, base, cli.EnvTokenFile, session}

	// Log in: the password from standard input, the token into a 0600 file.
	r := runCLI(t, "cli-admin-password-1\n", urlEnv, "login", "--user", "ops-admin", "--token-out", session)
	wantRun(t, r, 0, "", "logged in as ops-admin")
	if info, err := os.Stat(session); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("--token-out file: %v %v; want mode 0600", info, err)
	}
	b, _ := os.ReadFile(session)
	adminToken := strings.TrimSpace(string(b))
	if !strings.HasPrefix(adminToken, "caddy_tmp_") || r.stdout != "" || strings.Contains(r.stderr, adminToken) {
		t.Fatalf("login wrote %q to the file, stdout %q, stderr %q", adminToken, r.stdout, r.stderr)
	}
	// Without --token-out the token is the only thing on standard output.
	r = runCLI(t, "cli-admin-password-1\n", urlEnv, "login", "--user", "ops-admin")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "caddy_tmp_") || strings.Count(r.stdout, "\n") != 1 || strings.Contains(r.stderr, "caddy_tmp_") {
		t.Errorf("login to stdout: %s", r)
	}
	wantRun(t, runCLI(t, "", as, "whoami"), 0, "ops-admin", "")

	// The administrator creates a user for the CI system and its token.
	wantRun(t, runCLI(t, "ci-bot-password-1\n", as, "users", "create", "ci-bot", "--email", "ci@example.com"), 0, "ci-bot", "")
	r = runCLI(t, "", as, "users", "list")
	wantRun(t, r, 0, "USERNAME", "")
	if !strings.Contains(r.stdout, "ci@example.com") || !strings.Contains(r.stdout, "ops-admin") {
		t.Errorf("users list: %s", r)
	}
	r = runCLI(t, "", as, "tokens", "create", "ci-bot", "github-actions")
	secret := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(secret, "caddy_pat_") || strings.Contains(secret, "\n") ||
		strings.Contains(r.stderr, secret) || !strings.Contains(r.stderr, "shown only this once") {
		t.Fatalf("tokens create: %s", r)
	}
	if got := send(t, "GET", site+"/deploy", "Bearer "+secret, nil); got.status != 200 || string(got.body) != "hello ci-bot" {
		t.Errorf("the created token at the gateway: %d %s", got.status, got.body)
	}

	// A second token straight into a file (0600), and JSON for scripts.
	secretFile := filepath.Join(dir, "deploy.token")
	r = runCLI(t, "", as, "tokens", "create", "ci-bot", "deploy", "--secret-file", secretFile, "--json")
	var meta client.Token
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &meta) != nil || meta.Name != "deploy" || strings.Contains(r.stdout, "caddy_pat_") {
		t.Fatalf("tokens create --secret-file --json: %s", r)
	}
	if info, err := os.Stat(secretFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("--secret-file: %v %v; want mode 0600", info, err)
	}
	r = runCLI(t, "", as, "tokens", "list", "ci-bot", "--json")
	var toks []client.Token
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &toks) != nil || len(toks) != 2 {
		t.Fatalf("tokens list ci-bot --json: %s", r)
	}
	id := toks[0].ID
	if toks[0].Name != "github-actions" {
		id = toks[1].ID
	}
	wantRun(t, runCLI(t, "", as, "tokens", "get", "ci-bot", id), 0, "github-actions", "")
	r = runCLI(t, "", as, "tokens", "get", "ci-bot", id, "--json")
	var one client.Token
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &one) != nil || one.ID != id || strings.Contains(r.stdout, "caddy_pat_") {
		t.Fatalf("tokens get --json: %s", r)
	}
	wantRun(t, runCLI(t, "", as, "tokens", "get", "ci-bot", "tok_0000"), 2, "", "404")
	r = runCLI(t, "", as, "tokens", "list", "--expiring-within", "400d", "--kind", "permanent")
	wantRun(t, r, 0, "github-actions", "")
	if !strings.Contains(r.stdout, "LAST USED") || strings.Contains(r.stdout, "caddy_") {
		t.Errorf("tokens list table: %s", r)
	}

	// Lists come a page at a time; --limit stops early. The admin's token
	// expires first, so by expiry it comes before ci-bot's two: at
	// --limit 2 (pages of 2) ci-bot's second one is on the second page.
	early := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	wantRun(t, runCLI(t, "", as, "tokens", "create", "ops-admin", "early", "--expires-at", early, "--secret-file", filepath.Join(dir, "early.token")), 0, "", "early")
	r = runCLI(t, "", as, "tokens", "list", "ci-bot", "--expiring-within", "400d", "--limit", "2", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &toks) != nil || len(toks) != 2 || toks[0].User != "ci-bot" || toks[1].User != "ci-bot" {
		t.Errorf("tokens list ci-bot --expiring-within 400d --limit 2: %s", r)
	}
	for _, c := range [][]string{{"tokens", "list", "--limit", "1"}, {"users", "list", "--limit", "1"}, {"audit", "--limit", "1"}} {
		r = runCLI(t, "", as, append(c, "--json")...)
		var items []json.RawMessage
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &items) != nil || len(items) != 1 {
			t.Errorf("%v: %s", c, r)
		}
	}

	// Rotate before expiry: the new secret on stdout, the old one keeps
	// working for the grace period.
	r = runCLI(t, "", as, "tokens", "rotate", "ci-bot", id, "--grace", "1h")
	rotated := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(rotated, "caddy_pat_") || rotated == secret || strings.Contains(r.stderr, rotated) {
		t.Fatalf("tokens rotate: %s", r)
	}
	for _, s := range []string{secret, rotated} {
		if got := send(t, "GET", site+"/deploy", "Bearer "+s, nil); got.status != 200 {
			t.Errorf("after rotation with grace, a secret is refused: %d", got.status)
		}
	}

	// The notification settings.
	wantRun(t, runCLI(t, "", as, "settings", "set", "EnableUserTokenNotification", "7;30"), 0, "30;7", "")
	wantRun(t, runCLI(t, "", as, "settings", "set", "UserTokenExpirationNotificationEmails", "ops@example.com"), 0, "ops@example.com", "")
	r = runCLI(t, "", as, "settings", "list")
	wantRun(t, r, 0, "EnableUserTokenNotification", "")
	wantRun(t, runCLI(t, "", as, "settings", "get", "UserTokenExpirationNotificationEmails", "--json"), 0, `"value": "ops@example.com"`, "")
	wantRun(t, runCLI(t, "", as, "faults"), 0, "TOKEN ID", "")
	r = runCLI(t, "", as, "audit", "--limit", "50")
	wantRun(t, r, 0, "token_rotate", "")

	// Users: update and delete.
	wantRun(t, runCLI(t, "", as, "users", "update", "ci-bot", "--disabled=true"), 0, "yes", "")
	wantRun(t, runCLI(t, "new-ci-password-1\n", as, "users", "update", "ci-bot", "--disabled=false", "--password"), 0, "ci-bot", "")
	wantRun(t, runCLI(t, "", as, "users", "get", "ci-bot", "--json"), 0, `"disabled": false`, "")
	// Their own password needs the current one first, then the new one.
	wantRun(t, runCLI(t, "cli-admin-password-1\ncli-admin-password-2\n", as, "users", "update", "ops-admin", "--email", "ops@example.com", "--password"), 0, "ops@example.com", "")
	wantRun(t, runCLI(t, "cli-admin-password-2\n", urlEnv, "login", "--user", "ops-admin"), 0, "caddy_tmp_", "")

	t.Run("bad input", func(t *testing.T) {
		empty := filepath.Join(dir, "empty.token")
		_ = os.WriteFile(empty, []byte("\n"), 0o600)
		wrong := filepath.Join(dir, "wrong.token")
		_ = os.WriteFile(wrong, []byte("caddy_pat_not-a-real-token\n"), 0o600)
		twoLines := filepath.Join(dir, "two.token")
		_ = os.WriteFile(twoLines, []byte(adminToken+"\n"+adminToken+"\n"), 0o600)
		nonAdmin := filepath.Join(dir, "non-admin.token")
		_ = os.WriteFile(nonAdmin, []byte(secret), 0o600)

		for _, c := range []struct {
			name      string
			stdin     string
			env, args []string
			code      int
			stderr    string
		}{
			{"no token at all", "", urlEnv, []string{"tokens", "list"}, 1, "no API token: give --token-file"},
			{"missing token file", "", urlEnv, []string{"tokens", "list", "--token-file", filepath.Join(dir, "nope")}, 1, "cannot read the token file: no such file"},
			{"empty token file", "", urlEnv, []string{"tokens", "list", "--token-file", empty}, 1, "is empty"},
			{"two tokens in the file", "", urlEnv, []string{"tokens", "list", "--token-file", twoLines}, 1, "exactly one API token"},
			{"wrong token", "", urlEnv, []string{"tokens", "list", "--token-file", wrong}, 2, "401 Unauthorized: token is invalid (check the token"},
			{"no URL", "", []string{cli.EnvToken, adminToken}, []string{"whoami"}, 1, "no server: give --url"},
			{"not a URL", "", as, []string{"whoami", "--url", strings.TrimPrefix(site, "http://")}, 1, "is not an http:// or https:// URL"},
			{"unreachable", "", as, []string{"whoami", "--url", "http://127.0.0.1:1/api-tokens"}, 3, "cannot reach http://127.0.0.1:1/api-tokens"},
			{"not the admin API", "", as, []string{"whoami", "--url", site + "/elsewhere"}, 1, "is " + site + "/elsewhere the base URL of the api_token_admin handler?"},
			{"nothing there", "", as, []string{"whoami", "--url", "http://" + adminEndpoint + "/nothing"}, 2, "not an answer of the admin API"},
			{"not an administrator", "", urlEnv, []string{"users", "list", "--token-file", nonAdmin}, 2, "403 Forbidden: this action needs an administrator"},
			{"duplicate token name", "", as, []string{"tokens", "create", "ci-bot", "deploy"}, 2, "409 Conflict"},
			{"bad setting value", "", as, []string{"settings", "set", "EnableUserTokenNotification", "0"}, 2, "400 Bad Request: "},
			{"unknown setting", "", as, []string{"settings", "get", "Nope"}, 2, "404 Not Found"},
			{"unknown user", "", as, []string{"tokens", "list", "nobody"}, 2, "404 Not Found"},
			{"grace too long", "", as, []string{"tokens", "rotate", "ci-bot", id, "--grace", "30d"}, 2, "at most 7d"},
			{"bad expiry", "", as, []string{"tokens", "create", "ci-bot", "x", "--expires-at", "tomorrow"}, 1, "not an RFC 3339 time"},
			{"wrong password", "cli-admin-password-1\n", urlEnv, []string{"login", "--user", "ops-admin"}, 2, "invalid username or password"},
			{"no password", "", urlEnv, []string{"login", "--user", "ops-admin"}, 1, "no password"},
			{"unknown flag", "", as, []string{"tokens", "list", "--token", adminToken}, 1, "unknown flag: --token"},
			{"negative limit", "", as, []string{"tokens", "list", "--limit", "-1"}, 1, "--limit must not be negative"},
			{"no audit entries asked for", "", as, []string{"audit", "--limit", "0"}, 1, "--limit must be at least 1"},
			{"missing arguments", "", as, []string{"tokens", "create", "ci-bot"}, 1, "accepts 2 arg(s), received 1"},
			{"unknown command", "", as, []string{"tokens", "frobnicate"}, 1, `unknown command "frobnicate"`},
			{"nothing to update", "", as, []string{"users", "update", "ci-bot"}, 1, "nothing to change"},
			{"wrong current password", "nope\n", as, []string{"users", "update", "ops-admin", "--email", "x@example.com"}, 2, "403 Forbidden: current_password is not your current password"},
			{"unwritable secret file", "", as, []string{"tokens", "create", "ci-bot", "never", "--secret-file", filepath.Join(dir, "no-such-dir", "x")}, 1, "cannot be written"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := runCLI(t, c.stdin, c.env, c.args...)
				if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
					t.Errorf("want exit %d and stderr with %q; got %s", c.code, c.stderr, r)
				}
				if strings.Contains(r.stderr+r.stdout, adminToken) || strings.Contains(r.stderr, secret) {
					t.Errorf("a token was printed: %s", r)
				}
			})
		}
		// A refused create made no token, and the unwritable file made none either.
		r := runCLI(t, "", as, "tokens", "list", "ci-bot", "--json")
		if r.code != 0 || strings.Contains(r.stdout, `"never"`) || strings.Contains(r.stdout, `"name": "x"`) {
			t.Errorf("refused creates left tokens: %s", r)
		}
	})

	// Delete the token and the user; log out.
	wantRun(t, runCLI(t, "", as, "tokens", "delete", "ci-bot", id), 0, "", "deleted token")
	if got := send(t, "GET", site+"/deploy", "Bearer "+secret, nil); got.status != 401 {
		t.Errorf("a deleted token passes the gateway: %d", got.status)
	}
	wantRun(t, runCLI(t, "", as, "users", "delete", "ci-bot"), 0, "", "deleted user ci-bot")
	wantRun(t, runCLI(t, "", as, "settings", "delete", "EnableUserTokenNotification"), 0, "", "unset")
	wantRun(t, runCLI(t, "", as, "logout"), 0, "", "logged out")
	wantRun(t, runCLI(t, "", as, "whoami"), 2, "", "401")
}

// TestCLIScopesThroughCaddy runs section 7's least-privilege flows with
// `caddy api-tokens` against a real Caddy on a fake clock: the catalogue,
// a user's scopes, tokens created with scopes and networks, narrowed, and
// the report of the scopes each token really used over 30 days.
func TestCLIScopesThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	clock := useFakeClock(dir)
	// Scope usage reaches storage with the batched last uses only; a
	// short flush interval shows it to the API within the test.
	caddymodule.UseTestFlushInterval(dir, 50*time.Millisecond)
	port := freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin ops-admin cli-admin-password-1
		scope deploy "Trigger deployments"
		scope reports:read "Read reports"
		scope reports:write "Create and change reports"
	}
}
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle /deploy/* {
		api_token_auth {
			require_scope deploy
		}
		respond "deployed by {http.auth.user.id}" 200
	}
	handle /reports/* {
		api_token_auth {
			require_scope reports:write
			scope_mode shadow
		}
		respond "reports" 200
	}
	handle {
		api_token_auth
		respond "hello {http.auth.user.id}" 200
	}
}
`, globalOptions, dir, port))
	site := fmt.Sprintf("http://localhost:%d", port)
	base := site + "/api-tokens"
	files := t.TempDir()
	session := filepath.Join(files, "session.token")
	adminFile := filepath.Join(files, "admin.token")
	urlEnv := []string{cli.EnvURL, base}
	at := func(stdin string, args ...string) cliRun {
		t.Helper()
		return runCLIAt(t, clock.Now, stdin, []string{cli.EnvURL, base, cli.EnvTokenFile, adminFile}, args...)
	}
	readSecret := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	// A login session lasts 12 hours of the fake clock; the 31 days below
	// need the administrator's permanent token.
	wantRun(t, runCLI(t, "cli-admin-password-1\n", urlEnv, "login", "--user", "ops-admin", "--token-out", session), 0, "", "scopes: deploy,reports:read,reports:write")
	wantRun(t, runCLI(t, "", []string{cli.EnvURL, base, cli.EnvTokenFile, session}, "tokens", "create", "ops-admin", "cli", "--secret-file", adminFile), 0, "", "created token")
	adminToken := readSecret(adminFile)

	r := at("", "scopes")
	wantRun(t, r, 0, "reports:write", "")
	if !strings.Contains(r.stdout, "NAME") || !strings.Contains(r.stdout, "Trigger deployments") {
		t.Errorf("scopes: %s", r)
	}

	// A user's scopes: set at creation, replaced, taken, given back.
	r = at("ci-bot-password-1\n", "users", "create", "ci-bot", "--scope", "deploy,reports:read")
	wantRun(t, r, 0, "deploy,reports:read", "")
	if !strings.Contains(r.stdout, "SCOPES") {
		t.Errorf("users create: %s", r)
	}
	wantRun(t, at("", "users", "get", "ops-admin"), 0, "(every scope)", "")
	wantRun(t, at("", "users", "update", "ci-bot", "--no-scopes", "--json"), 0, `"scopes": []`, "")
	wantRun(t, at("", "users", "update", "ci-bot", "--scope", "reports:read", "--scope", "deploy"), 0, "deploy,reports:read", "")

	// Tokens with scopes and networks; what they got is said on standard
	// error, the secret alone goes to its file.
	pipelineFile := filepath.Join(files, "pipeline.token")
	r = at("", "tokens", "create", "ci-bot", "pipeline", "--scope", "deploy", "--scope", "reports:read", "--allow-cidr", "127.0.0.0/8", "--allow-cidr", "::1/128", "--secret-file", pipelineFile)
	wantRun(t, r, 0, "", "(scopes: deploy,reports:read; networks: 127.0.0.0/8,::1/128)")
	pipeline := readSecret(pipelineFile)
	clock.Advance(time.Minute) // lists are by creation time
	wantRun(t, at("", "tokens", "create", "ci-bot", "nothing", "--no-scopes", "--secret-file", filepath.Join(files, "nothing.token")), 0, "", "(scopes: none; networks: any)")
	clock.Advance(time.Minute)
	wantRun(t, at("", "tokens", "create", "ci-bot", "default", "--secret-file", filepath.Join(files, "default.token")), 0, "", "(scopes: deploy,reports:read; networks: any)")
	defaultToken := readSecret(filepath.Join(files, "default.token"))
	r = at("", "tokens", "list", "ci-bot", "--json")
	var toks []client.Token
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &toks) != nil || len(toks) != 3 {
		t.Fatalf("tokens list ci-bot --json: %s", r)
	}
	ids := map[string]string{}
	for _, tk := range toks {
		ids[tk.Name] = tk.ID
	}
	r = at("", "tokens", "list", "ci-bot")
	for _, want := range []string{"SCOPES", "NETWORKS", "LAST IP", "127.0.0.0/8,::1/128", "any"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tokens list ci-bot lacks %q: %s", want, r)
		}
	}

	// Narrowing: the API answers the narrowed token, and the gateway
	// holds to it at once.
	wantRun(t, at("", "tokens", "narrow", "ci-bot", ids["default"], "--scope", "deploy", "--allow-cidr", "10.0.0.0/8"), 0, "10.0.0.0/8", "")
	var got tokenView
	api(t, base, adminToken, http.MethodGet, "/users/ci-bot/tokens/"+ids["default"], nil, http.StatusOK, &got)
	if !slices.Equal(got.Scopes, []string{"deploy"}) || !slices.Equal(got.AllowedCIDRs, []string{"10.0.0.0/8"}) {
		t.Errorf("after tokens narrow: scopes %v, allowed_cidrs %v; want [deploy], [10.0.0.0/8]", got.Scopes, got.AllowedCIDRs)
	}
	wantNetworkRefusal(t, send(t, http.MethodGet, site+"/deploy/x", "Bearer "+defaultToken, nil))
	wantRun(t, at("", "tokens", "narrow", "ci-bot", ids["default"], "--any-network", "--json"), 0, `"allowed_cidrs": []`, "")
	if resp := send(t, http.MethodGet, site+"/deploy/x", "Bearer "+defaultToken, nil); resp.status != http.StatusOK {
		t.Errorf("after --any-network: %d %s", resp.status, resp.body)
	}

	// A session with fewer scopes.
	r = runCLI(t, "ci-bot-password-1\n", urlEnv, "login", "--user", "ci-bot", "--scope", "deploy")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "caddy_tmp_") || !strings.Contains(r.stderr, "(scopes: deploy)") {
		t.Errorf("login --scope deploy: %s", r)
	}

	// 31 days on, the pipeline deploys and meets a shadow route that wants
	// reports:write; it never read reports.
	clock.Advance(31 * 24 * time.Hour)
	if resp := send(t, http.MethodGet, site+"/deploy/x", "Bearer "+pipeline, nil); resp.status != http.StatusOK {
		t.Fatalf("the pipeline deploying: %d %s", resp.status, resp.body)
	}
	if resp := send(t, http.MethodPost, site+"/reports/x", "Bearer "+pipeline, nil); resp.status != http.StatusOK {
		t.Fatalf("the pipeline on the shadow route: %d %s", resp.status, resp.body)
	}
	wantRun(t, at("", "tokens", "create", "ci-bot", "fresh", "--secret-file", filepath.Join(files, "fresh.token")), 0, "", "created")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = at("", "tokens", "get", "ci-bot", ids["pipeline"], "--json")
		var one client.Token
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &one) != nil {
			t.Fatalf("tokens get --json: %s", r)
		}
		if one.LastUsedIP != "" && one.ScopeUsage["deploy"].LastNeededAt != nil && one.ScopeUsage["reports:write"].LastMissingAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline's uses were not flushed within 10 s: %s", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = at("", "tokens", "get", "ci-bot", ids["pipeline"])
	for _, want := range []string{"127.0.0.1", "LAST MISSING IN SHADOW", "reports:write  no", "reports:read   yes", clock.Now().Format("2006-01-02 15:04Z")} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tokens get lacks %q: %s", want, r)
		}
	}

	// The report: the pipeline's unused reports:read and the
	// reports:write it lacks; the default token, whose one deploy is 31
	// days old; not the token without scopes, nor the fresh one.
	r = at("", "tokens", "unused-scopes", "--user", "ci-bot")
	wantReport(t, r, [][]string{
		{"USER", "TOKEN", "ID", "NAME", "UNUSED", "SCOPES", "MISSING", "IN", "SHADOW"},
		{"ci-bot", ids["pipeline"], "pipeline", "reports:read", "reports:write"},
		{"ci-bot", ids["default"], "default", "deploy", "-"},
		{},
		{"caddy", "api-tokens", "tokens", "narrow", "ci-bot", ids["pipeline"], "--scope", "deploy"},
		{"caddy", "api-tokens", "tokens", "narrow", "ci-bot", ids["default"], "--no-scopes"},
	})
	if !strings.Contains(r.stderr, "checked 3 active permanent tokens created more than 30 days ago: 2 with scopes not needed since") {
		t.Errorf("tokens unused-scopes summary: %s", r)
	}
	r = at("", "tokens", "unused-scopes", "--user", "ci-bot", "--json")
	var report []struct {
		TokenID string   `json:"token_id"`
		Unused  []string `json:"unused_scopes"`
		Missing []string `json:"missing_in_shadow"`
		Narrow  string   `json:"narrow_command"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &report) != nil || len(report) != 2 || report[0].TokenID != ids["pipeline"] ||
		!slices.Equal(report[0].Unused, []string{"reports:read"}) || !slices.Equal(report[0].Missing, []string{"reports:write"}) {
		t.Errorf("tokens unused-scopes --json: %s", r)
	}
	// Every user's, for an administrator: the administrator's own token
	// used none of its scopes on the gateway either.
	r = at("", "tokens", "unused-scopes")
	if r.code != 0 || !strings.Contains(r.stdout, "deploy,reports:read,reports:write") || strings.Count(r.stdout, "tokens narrow") != 3 {
		t.Errorf("tokens unused-scopes of every user: %s", r)
	}
	// Over 40 days no token is old enough to tell.
	wantReport(t, at("", "tokens", "unused-scopes", "--days", "40"), [][]string{{"USER", "TOKEN", "ID", "NAME", "UNUSED", "SCOPES", "MISSING", "IN", "SHADOW"}})

	// The printed command narrows the pipeline to what it uses; it is not
	// reported for unused scopes any more, still for the one it lacks.
	narrow := strings.Fields(report[0].Narrow)
	wantRun(t, at("", narrow[2:]...), 0, "deploy", "")
	api(t, base, adminToken, http.MethodGet, "/users/ci-bot/tokens/"+ids["pipeline"], nil, http.StatusOK, &got)
	if !slices.Equal(got.Scopes, []string{"deploy"}) {
		t.Errorf("after the printed narrow command: scopes %v, want [deploy]", got.Scopes)
	}
	wantReport(t, at("", "tokens", "unused-scopes", "--user", "ci-bot"), [][]string{
		{"USER", "TOKEN", "ID", "NAME", "UNUSED", "SCOPES", "MISSING", "IN", "SHADOW"},
		{"ci-bot", ids["pipeline"], "pipeline", "-", "reports:write"},
		{"ci-bot", ids["default"], "default", "deploy", "-"},
		{},
		{"caddy", "api-tokens", "tokens", "narrow", "ci-bot", ids["default"], "--no-scopes"},
	})

	t.Run("bad input", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			args   []string
			code   int
			stderr string
		}{
			{"a scope cannot be added", []string{"tokens", "narrow", "ci-bot", ids["nothing"], "--scope", "deploy"}, 2, "scopes can only be removed"},
			{"scopes and none", []string{"tokens", "narrow", "ci-bot", ids["default"], "--scope", "deploy", "--no-scopes"}, 1, "either --scope or --no-scopes, not both"},
			{"networks and any", []string{"tokens", "narrow", "ci-bot", ids["default"], "--allow-cidr", "10.0.0.0/8", "--any-network"}, 1, "either --allow-cidr or --any-network"},
			{"nothing to narrow", []string{"tokens", "narrow", "ci-bot", ids["default"]}, 1, "nothing to change: give --scope"},
			{"an empty scope", []string{"tokens", "create", "ci-bot", "x", "--scope", "deploy,,reports:read"}, 1, "has an empty value"},
			{"an empty --scope", []string{"tokens", "create", "ci-bot", "x", "--scope", ""}, 1, "for none, give --no-scopes"},
			{"a scope beyond the user's", []string{"tokens", "create", "ci-bot", "x", "--scope", "reports:write"}, 2, `does not hold scope "reports:write"`},
			{"an undeclared scope", []string{"users", "update", "ci-bot", "--scope", "deploi"}, 2, `scope "deploi" is not declared`},
			{"a host address as network", []string{"tokens", "create", "ci-bot", "x", "--allow-cidr", "10.0.0.1/8"}, 2, "did you mean 10.0.0.0/8"},
			{"no days", []string{"tokens", "unused-scopes", "--days", "0"}, 1, "--days must be at least 1"},
		} {
			t.Run(c.name, func(t *testing.T) {
				if r := at("", c.args...); r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
					t.Errorf("want exit %d and stderr with %q; got %s", c.code, c.stderr, r)
				}
			})
		}
	})
}

// wantReport checks a command's table and lines, word by word (the
// columns' widths depend on the token ids).
func wantReport(t *testing.T, r cliRun, want [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	ok := r.code == 0 && len(lines) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = slices.Equal(strings.Fields(lines[i]), want[i])
	}
	if !ok {
		t.Errorf("want exit 0 and the lines %q; got %s", want, r)
	}
}
