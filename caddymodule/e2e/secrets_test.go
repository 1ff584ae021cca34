package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNoSecretLeaks runs every flow that handles a secret through the real
// Caddy, with JSON logs at DEBUG level and access logs written to files,
// then scans the logs, Caddy's output, /metrics, the audit log and every
// error answer for the tokens, the passwords, the token hashes (hex and
// base64) and anything shaped like a bcrypt hash. Whatever leaks there
// ends up in log shippers and dashboards.
func TestNoSecretLeaks(t *testing.T) {
	work := t.TempDir()
	logFile := filepath.Join(work, "caddy.log")
	accessLog := filepath.Join(work, "access.log")
	s := newSite(t, filepath.Join(work, "db"), fmt.Sprintf("log {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel DEBUG\n\t}", logFile))
	s.logPath = logFile
	s.siteCfg = fmt.Sprintf("log {\n\t\toutput file %s\n\t\tformat json\n\t}", accessLog)
	s.start()
	s.waitReady()

	var secrets []string // everything that must never be seen
	var errorBodies []string
	keep := func(a answer) {
		if a.status >= 400 {
			errorBodies = append(errorBodies, string(a.body))
		}
	}
	const alicePassword, aliceNewPassword = "Alice-Pass-1-correct-horse", "Alice-Pass-2-battery-staple"
	const pastedPassword = "Pasted:Password/In/The/Username/Field"
	secrets = append(secrets, adminPassword, alicePassword, aliceNewPassword, pastedPassword, "wrong-password-guess-1")

	// Failed logins of every kind, including a password pasted as the
	// username (no valid username looks like that).
	keep(s.call("", http.MethodPost, "/login", map[string]string{"username": adminUser, "password": "wrong-password-guess-1"}, http.StatusUnauthorized, nil))
	keep(s.call("", http.MethodPost, "/login", map[string]string{"username": "nobody", "password": "wrong-password-guess-1"}, http.StatusUnauthorized, nil))
	keep(s.call("", http.MethodPost, "/login", map[string]string{"username": pastedPassword, "password": "wrong-password-guess-1"}, http.StatusUnauthorized, nil))

	root := s.login(adminUser, adminPassword)
	secrets = append(secrets, root)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": alicePassword}, http.StatusCreated, nil)
	keep(s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": alicePassword}, http.StatusConflict, nil))
	var tok, rotated secretToken
	s.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)
	secrets = append(secrets, tok.Token)
	if a := s.gatewayAs(tok.Token); a.status != http.StatusOK {
		t.Fatalf("gateway with alice's token: %s", a)
	}
	s.call(root, http.MethodPost, "/users/alice/tokens/"+tok.ID+"/rotate", map[string]string{"grace": "1h"}, http.StatusCreated, &rotated)
	secrets = append(secrets, rotated.Token)
	s.gatewayAs(rotated.Token)
	s.gatewayAs(tok.Token)
	// Wrong tokens of every shape, at the gateway and the admin API.
	for _, bad := range []string{tok.Token[:len(tok.Token)-1] + "x", rotated.Token + "x", "caddy_pat_garbage"} {
		keep(s.gatewayAs(bad))
		keep(raw(t, http.MethodGet, s.base()+"/me", "Bearer "+bad, nil))
		secrets = append(secrets, bad)
	}
	s.call(root, http.MethodPatch, "/users/alice", map[string]any{"password": aliceNewPassword}, http.StatusOK, nil)
	keep(s.call("", http.MethodPost, "/login", map[string]string{"username": "alice", "password": alicePassword}, http.StatusUnauthorized, nil))
	aliceSession := s.login("alice", aliceNewPassword)
	secrets = append(secrets, aliceSession)
	keep(s.call(aliceSession, http.MethodPatch, "/users/alice", map[string]any{"admin": true, "password": "Self-Promotion-Pass-3"}, http.StatusForbidden, nil))
	secrets = append(secrets, "Self-Promotion-Pass-3")
	s.call(aliceSession, http.MethodPost, "/logout", nil, http.StatusNoContent, nil)
	keep(raw(t, http.MethodGet, s.base()+"/me", "Bearer "+aliceSession, nil))
	s.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "400"}, http.StatusBadRequest, nil)
	s.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "400000"}, http.StatusBadRequest, nil)
	s.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "366"}, http.StatusBadRequest, nil)
	s.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "30"}, http.StatusOK, nil)
	s.call(root, http.MethodGet, "/backup", nil, http.StatusOK, nil) // its body holds hashes by design
	s.call(root, http.MethodDelete, "/users/alice/tokens/"+rotated.ID, nil, http.StatusNoContent, nil)
	keep(s.gatewayAs(rotated.Token))

	metrics := raw(t, http.MethodGet, "http://"+s.adminEP+"/metrics", "", nil)
	if metrics.status != http.StatusOK || !strings.Contains(string(metrics.body), "api_tokens_auth_requests_total") {
		t.Fatalf("GET /metrics: %d, or without api_tokens metrics", metrics.status)
	}
	audit := s.call(root, http.MethodGet, "/audit?limit=1000", nil, http.StatusOK, nil)
	s.stop() // flush the log files

	logs, err := os.ReadFile(logFile)
	if err != nil || len(logs) == 0 {
		t.Fatalf("reading Caddy's log: %v (%d bytes)", err, len(logs))
	}
	access, err := os.ReadFile(accessLog)
	if err != nil || !strings.Contains(string(access), `"Authorization":["REDACTED"]`) {
		t.Fatalf("the access log has no redacted Authorization header, so it did not log what the test needs (%v):\n%.2000s", err, access)
	}
	// The logs did see the flows (so a clean scan means something).
	for _, want := range []string{`"status":401`, "alice"} {
		if !strings.Contains(string(access)+string(logs), want) {
			t.Fatalf("the logs do not mention %q; did the flows run?", want)
		}
	}

	sources := map[string]string{
		"Caddy's log":      string(logs),
		"the access log":   string(access),
		"Caddy's output":   s.output(), // includes its log file
		"/metrics":         string(metrics.body),
		"the audit log":    string(audit.body),
		"the error bodies": strings.Join(errorBodies, "\n"),
	}
	needles := withHashes(secrets)
	bcryptHash := regexp.MustCompile(`\$2[aby]\$\d\d\$`)
	for name, text := range sources {
		for _, n := range needles {
			if strings.Contains(text, n.value) {
				t.Errorf("%s contains %s", name, n.what)
			}
		}
		if bcryptHash.MatchString(text) {
			t.Errorf("%s contains a bcrypt hash", name)
		}
	}
	t.Logf("scanned %d bytes of logs, %d of access logs, %d of metrics, %d of audit, %d error answers for %d secrets",
		len(logs), len(access), len(metrics.body), len(audit.body), len(errorBodies), len(secrets))
}

type needle struct{ what, value string }

// withHashes returns each secret with its SHA-256 in hex and base64 (the
// forms a store or a log could hold), each labeled without the value.
func withHashes(secrets []string) []needle {
	var out []needle
	for i, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		out = append(out,
			needle{fmt.Sprintf("secret #%d", i), s},
			needle{fmt.Sprintf("the hex SHA-256 of secret #%d", i), hex.EncodeToString(sum[:])},
			needle{fmt.Sprintf("the base64 SHA-256 of secret #%d", i), base64.RawStdEncoding.EncodeToString(sum[:])},
			needle{fmt.Sprintf("the base64url SHA-256 of secret #%d", i), base64.RawURLEncoding.EncodeToString(sum[:])},
		)
	}
	return out
}
