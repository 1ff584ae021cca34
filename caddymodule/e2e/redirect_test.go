package e2e

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// The CLI sends its token and its password to the URL it was given and
// nowhere else: a redirect, to another port, from https to http or to
// another host, is refused with a message naming where it led, and the
// place it led to never hears from the CLI. Credentials in --url never
// appear in a message.
func TestCLIFollowsNoRedirect(t *testing.T) {
	var reached atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		http.Error(w, "the sink", http.StatusTeapot)
	}))
	t.Cleanup(sink.Close)
	sinkPort := sink.URL[strings.LastIndexByte(sink.URL, ':')+1:]
	redirectTo := func(target string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target+r.URL.Path, http.StatusPermanentRedirect)
		})
	}
	otherPort := httptest.NewServer(redirectTo(sink.URL))
	t.Cleanup(otherPort.Close)
	otherHost := httptest.NewServer(redirectTo("http://localhost:" + sinkPort))
	t.Cleanup(otherHost.Close)
	toPlain := httptest.NewTLSServer(redirectTo(sink.URL))
	t.Cleanup(toPlain.Close)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: toPlain.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("caddy_pat_notarealtokenbutsecretenough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSL_CERT_FILE=" + caFile}
	for name, base := range map[string]string{
		"same host, another port": otherPort.URL + "/api-tokens",
		"https to http":           toPlain.URL + "/api-tokens",
		"another host":            otherHost.URL + "/api-tokens",
	} {
		for _, args := range [][]string{
			{"api-tokens", "whoami", "--url", base, "--token-file", tokenFile},
			{"api-tokens", "login", "--url", base, "--user", "admin"},
			{"api-tokens", "backup", "--url", base, "--token-file", tokenFile, "--output", filepath.Join(dir, "backup")},
		} {
			r := runCLI(t, "the-password\n", env, args...)
			if r.code == 0 || !strings.Contains(r.stderr, "redirected to") || !strings.Contains(r.stderr, "which was not followed") {
				t.Errorf("%s, %s: exit %d, stderr %q; want a refused redirect", name, args[1], r.code, r.stderr)
			}
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the redirects' target was sent %d requests", n)
	}

	// Credentials in a URL stay out of every message.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	withCredentials := strings.Replace(closed.URL, "http://", "http://user:S3cret-in-url@", 1) + "/api-tokens"
	for _, args := range [][]string{
		{"api-tokens", "whoami", "--url", withCredentials, "--token-file", tokenFile},
		{"api-tokens", "login", "--url", withCredentials, "--user", "admin"},
		{"api-tokens", "backup", "--url", withCredentials, "--token-file", tokenFile, "--output", filepath.Join(dir, "backup2")},
		{"api-tokens", "whoami", "--url", "ftp://user:S3cret-in-url@example.com/", "--token-file", tokenFile},
	} {
		r := runCLI(t, "the-password\n", nil, args...)
		if r.code == 0 || strings.Contains(r.stderr+r.stdout, "S3cret") {
			t.Errorf("%s: exit %d, output %q; want a failure that does not show the URL's password", args[1], r.code, r.stderr+r.stdout)
		}
	}
}
