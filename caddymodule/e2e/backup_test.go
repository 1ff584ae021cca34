package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestBackupRestoreRoundTrip is the operator's procedure from the README:
// back up a running Caddy with `caddy api-tokens backup --url`, restore
// with `caddy api-tokens restore` into a fresh directory, start Caddy on
// it, and find users, tokens and settings, with an old token still
// passing the gateway. The offline commands are checked on the way: they
// refuse a directory a running Caddy holds, and restore refuses to
// overwrite.
func TestBackupRestoreRoundTrip(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "db")
	live := startSite(t, dir, "")
	root := live.login(adminUser, adminPassword)
	live.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	live.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "deploy"}, http.StatusCreated, &tok)
	live.call(root, http.MethodPut, "/settings/UserTokenExpirationNotificationEmails", map[string]string{"value": "ops@example.com;sec@example.com"}, http.StatusOK, nil)
	if a := live.gatewayAs(tok.Token); a.status != http.StatusOK {
		t.Fatalf("token before backup: %s", a)
	}

	tokenFile := filepath.Join(work, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(root+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	online := filepath.Join(work, "online.backup")
	if out, err := runCaddy(t, "api-tokens", "backup", "--url", live.base(), "--token-file", tokenFile, "--output", online); err != nil {
		t.Fatalf("online backup: %v\n%s", err, out)
	}
	if info, err := os.Stat(online); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("backup file: %v, mode %v; want it readable by its owner only", err, info.Mode().Perm())
	}

	// Offline commands while Caddy holds the directory.
	out, err := runCaddy(t, "api-tokens", "backup", "--storage-path", dir, "--output", filepath.Join(work, "offline.backup"))
	if err == nil || !strings.Contains(out, "in use by another process") {
		t.Errorf("offline backup of a running Caddy's directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(work, "offline.backup")); !os.IsNotExist(err) {
		t.Errorf("a failed backup left its output file: %v", err)
	}
	out, err = runCaddy(t, "api-tokens", "restore", "--storage-path", dir, "--input", online)
	if err == nil || !strings.Contains(out, "is not empty") {
		t.Errorf("restore over the live directory: %v\n%s", err, out)
	}
	// A wrong token is refused by the server, and the command says so.
	if err := os.WriteFile(tokenFile, []byte(tok.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runCaddy(t, "api-tokens", "backup", "--url", live.base(), "--token-file", tokenFile, "--output", filepath.Join(work, "x.backup"))
	if err == nil || !strings.Contains(out, "403") || strings.Contains(out, tok.Token) {
		t.Errorf("backup with a non-admin token: %v\n%s", err, out)
	}

	restored := filepath.Join(work, "restored")
	if out, err := runCaddy(t, "api-tokens", "restore", "--storage-path", restored, "--input", online); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	live.stop()
	// The stopped original can be backed up offline too; it has at least
	// what the online backup had.
	if out, err := runCaddy(t, "api-tokens", "backup", "--storage-path", dir, "--output", filepath.Join(work, "offline.backup")); err != nil {
		t.Errorf("offline backup of a stopped Caddy: %v\n%s", err, out)
	}

	back := startSite(t, restored, "")
	if a := back.gatewayAs(tok.Token); a.status != http.StatusOK || string(a.body) != "hello alice" {
		t.Errorf("the old token on the restored database: %s", a)
	}
	back.login("alice", "alice-password-1")
	root2 := back.login(adminUser, adminPassword)
	var toks []storage.Token
	back.call(root2, http.MethodGet, "/users/alice/tokens", nil, http.StatusOK, &toks)
	toks = slices.DeleteFunc(toks, func(t storage.Token) bool { return t.Kind != storage.Permanent })
	if len(toks) != 1 || toks[0].ID != tok.ID || toks[0].Name != "deploy" || toks[0].LastUsedAt == nil {
		t.Errorf("alice's tokens after restore: %+v", toks)
	}
	var settings []storage.Setting
	back.call(root2, http.MethodGet, "/settings", nil, http.StatusOK, &settings)
	if !slices.ContainsFunc(settings, func(s storage.Setting) bool { return s.Value == "ops@example.com;sec@example.com" }) {
		t.Errorf("settings after restore: %+v", settings)
	}
	var audit []storage.AuditEntry
	back.call(root2, http.MethodGet, "/audit?limit=1000", nil, http.StatusOK, &audit)
	if !slices.ContainsFunc(audit, func(a storage.AuditEntry) bool { return a.Action == storage.ActionBackup && a.Actor == adminUser }) {
		t.Errorf("the restored audit log lacks the backup entry: %+v", audit)
	}
	// The root session token from before the backup still works too.
	back.call(root, http.MethodGet, "/me", nil, http.StatusOK, nil)
}
