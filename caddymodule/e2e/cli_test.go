package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// cliResult is a `caddy api-tokens` process as an operator sees it.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the built caddy binary with stdin and extra environment.
func runCLI(t *testing.T, stdin string, env []string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(testtools.CaddyBinary(t), args...)
	cmd.Env = append(caddyEnv(t.TempDir()), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running caddy %v: %v", args, err)
	}
	return cliResult{code, out.String(), errOut.String()}
}

// TestCLIBinary runs `caddy api-tokens` as the built binary against a
// running Caddy: the commands are wired into Caddy's command line, the
// exit codes reach the shell, secrets go to standard output only, and
// `caddy help api-tokens` documents the commands and exit codes.
func TestCLIBinary(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	env := []string{"API_TOKENS_URL=" + s.base(), "API_TOKENS_TOKEN_FILE=" + tokenFile}

	r := runCLI(t, adminPassword+"\n", env, "api-tokens", "login", "--user", adminUser, "--token-out", tokenFile)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "logged in as root") {
		t.Fatalf("login: %+v", r)
	}
	if info, err := os.Stat(tokenFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", info, err)
	}
	if r := runCLI(t, "ci-password-1\n", env, "api-tokens", "users", "create", "ci-bot"); r.code != 0 {
		t.Fatalf("users create: %+v", r)
	}
	r = runCLI(t, "", env, "api-tokens", "tokens", "create", "ci-bot", "deploy")
	secret := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(secret, "caddy_pat_") || strings.Contains(r.stderr, secret) {
		t.Fatalf("tokens create: %+v", r)
	}
	if a := s.gatewayAs(secret); a.status != 200 || string(a.body) != "hello ci-bot" {
		t.Errorf("the created token at the gateway: %s", a)
	}
	r = runCLI(t, "", env, "api-tokens", "tokens", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "deploy") || strings.Contains(r.stdout, secret) {
		t.Errorf("tokens list: %+v", r)
	}

	for _, c := range []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr string
	}{
		{"the server refuses", env, []string{"api-tokens", "tokens", "create", "ci-bot", "deploy"}, 2, "409 Conflict"},
		{"unreachable", []string{"API_TOKENS_URL=http://127.0.0.1:1/api-tokens", "API_TOKENS_TOKEN_FILE=" + tokenFile}, []string{"api-tokens", "whoami"}, 3, "cannot reach"},
		{"missing token file", []string{"API_TOKENS_URL=" + s.base(), "API_TOKENS_TOKEN_FILE=" + filepath.Join(dir, "nope")}, []string{"api-tokens", "whoami"}, 1, "API_TOKENS_TOKEN_FILE: cannot read the token file"},
		{"unknown flag", env, []string{"api-tokens", "whoami", "--password", "x"}, 1, "unknown flag: --password"},
	} {
		r := runCLI(t, "", c.env, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
			t.Errorf("%s: want exit %d and stderr with %q; got %+v", c.name, c.code, c.stderr, r)
		}
	}

	help := runCLI(t, "", nil, "help", "api-tokens")
	for _, want := range []string{"tokens list|get|create|narrow|rotate|", "unused-scopes", "API_TOKENS_TOKEN_FILE", "Exit codes: 0 done", "backup"} {
		if !strings.Contains(help.stdout+help.stderr, want) {
			t.Errorf("caddy help api-tokens does not mention %q:\n%s%s", want, help.stdout, help.stderr)
		}
	}
}
