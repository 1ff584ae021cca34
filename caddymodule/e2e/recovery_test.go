package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestResetPasswordRecovery is the README's way back in when no admin can
// log in: with Caddy stopped, `caddy api-tokens reset-password` sets the
// password from standard input; it refuses while Caddy runs, and the
// change is audited.
func TestResetPasswordRecovery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s := startSite(t, dir, "")
	session := s.login(adminUser, adminPassword)
	const newPassword = "Recovered-Password-42 with spaces"
	reset := func() (string, error) {
		cmd := exec.Command(testtools.CaddyBinary(t), "api-tokens", "reset-password", "--storage-path", dir, "--user", adminUser)
		cmd.Env = caddyEnv(t.TempDir())
		cmd.Stdin = strings.NewReader(newPassword + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := reset(); err == nil || !strings.Contains(out, "in use by another process") {
		t.Errorf("reset-password while Caddy runs: %v\n%s", err, out)
	}
	s.stop()
	if out, err := reset(); err != nil {
		t.Fatalf("reset-password: %v\n%s", err, out)
	} else if strings.Contains(out, newPassword) {
		t.Errorf("reset-password echoed the password: %s", out)
	} else if !strings.Contains(out, "their login sessions are ended") {
		t.Errorf("reset-password does not say the sessions ended: %s", out)
	}

	again := startSite(t, dir, "")
	// The new password ended the session logged in before the reset.
	again.call(session, http.MethodGet, "/me", nil, http.StatusUnauthorized, nil)
	again.call("", http.MethodPost, "/login", map[string]string{"username": adminUser, "password": adminPassword}, http.StatusUnauthorized, nil)
	root := again.login(adminUser, newPassword)
	var audit []storage.AuditEntry
	again.call(root, http.MethodGet, "/audit?limit=50", nil, http.StatusOK, &audit)
	if !slices.ContainsFunc(audit, func(a storage.AuditEntry) bool {
		return a.Actor == "cli" && a.Action == storage.ActionUserUpdate && a.Target == adminUser
	}) {
		t.Errorf("the reset is not in the audit log: %+v", audit)
	}
}
