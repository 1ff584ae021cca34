package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// logFilter is the filter the README documents for tokens that clients
// put where Caddy does not redact them: the access_token query parameter
// and the X-Authorization header.
const logFilter = `format filter {
			request>uri query {
				delete access_token
			}
			request>headers>X-Authorization delete
		}`

// Tokens sent in ?access_token= or X-Authorization reach neither the
// access log nor the error log with the README's log filter in place,
// while the requests themselves are still logged.
func TestLogFilterRemovesTokensOutsideTheHeader(t *testing.T) {
	dir := t.TempDir()
	errLog, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	s := newSite(t, filepath.Join(dir, "db"), fmt.Sprintf(`log default {
		output file %s
		%s
	}`, errLog, logFilter))
	s.logPath = errLog
	s.siteCfg = fmt.Sprintf(`log {
		output file %s
		%s
	}
	handle /broken/* {
		error "upstream broke" 502
	}`, accessLog, logFilter)
	s.start()
	s.waitReady()

	sec := secret.New(storage.Permanent)
	for _, path := range []string{"/app?access_token=" + sec + "&page=2", "/broken/x?access_token=" + sec + "&page=2"} {
		a := raw(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", s.port, path), "", nil, "X-Authorization", "Bearer "+sec)
		if a.status != http.StatusUnauthorized && a.status != http.StatusBadGateway {
			t.Fatalf("GET %s: %s", path, a)
		}
	}
	s.stop()
	for _, f := range []string{accessLog, errLog} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), sec) {
			t.Errorf("%s has the token:\n%s", filepath.Base(f), b)
		}
		if !strings.Contains(string(b), "page=2") {
			t.Errorf("%s does not log the requests:\n%s", filepath.Base(f), b)
		}
	}
}

// A bootstrap_admin password written in the Caddyfile is warned about at
// start (Caddy's /config API shows it), without being logged itself; a
// placeholder keeps it out of /config and gets no warning.
func TestLiteralBootstrapPasswordIsWarnedAbout(t *testing.T) {
	const warning = "bootstrap_admin has its password written in the config"
	literal := newSite(t, filepath.Join(t.TempDir(), "db"), "")
	literal.editCfg = func(cfg string) string {
		return strings.Replace(cfg, "bootstrap_admin {env.E2E_ADMIN} {env.E2E_ADMIN_PASSWORD}", "bootstrap_admin "+adminUser+" "+adminPassword, 1)
	}
	literal.start()
	literal.waitReady()
	out := literal.output()
	if !strings.Contains(out, warning) {
		t.Errorf("no warning for a literal password:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, warning) && strings.Contains(line, adminPassword) {
			t.Errorf("the warning shows the password: %s", line)
		}
	}
	if a := raw(t, http.MethodGet, "http://"+literal.adminEP+"/config/", "", nil); !strings.Contains(string(a.body), adminPassword) {
		t.Errorf("/config does not show the literal password, so the warning's reason is gone: %s", a)
	}

	placeholder := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	if strings.Contains(placeholder.output(), warning) {
		t.Errorf("a placeholder is warned about:\n%s", placeholder.output())
	}
	if a := raw(t, http.MethodGet, "http://"+placeholder.adminEP+"/config/", "", nil); strings.Contains(string(a.body), adminPassword) || !strings.Contains(string(a.body), "{env.E2E_ADMIN_PASSWORD}") {
		t.Errorf("/config with a placeholder: %s", a)
	}
}
