package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// migrate runs `caddy api-tokens migrate` with the DSN in the environment,
// as an operator would.
func migrate(t *testing.T, dsn string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testtools.CaddyBinary(t), append([]string{"api-tokens", "migrate"}, args...)...)
	cmd.Env = append(caddyEnv(t.TempDir()), "API_TOKENS_DATABASE_URL="+dsn)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// A gateway on Badger moves to PostgreSQL and back with the migrate
// command: the users log in with their passwords and every token keeps
// working, through a Caddy started on each copy.
func TestMigrateBadgerToPostgresAndBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	first := startSite(t, dir, "")
	root := first.login(adminUser, adminPassword)
	first.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	first.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)
	first.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "21"}, http.StatusOK, nil)
	first.stop()

	dsn := testtools.PostgresDatabase(t)
	if out, err := migrate(t, "", "--from", "badger:"+dir, "--to", "postgres"); err == nil || !strings.Contains(out, "API_TOKENS_DATABASE_URL") {
		t.Errorf("migrate without the DSN in the environment: %v\n%s", err, out)
	}
	// Two users (the admin and alice), two tokens (alice's and the
	// admin's login session, which lives on after the move).
	out, err := migrate(t, dsn, "--from", "badger:"+dir, "--to", "postgres")
	if err != nil || !strings.Contains(out, "copied 2 users and 2 tokens") {
		t.Fatalf("migrate to PostgreSQL: %v\n%s", err, out)
	}
	if out, err := migrate(t, dsn, "--from", "badger:"+dir, "--to", "postgres"); err == nil || !strings.Contains(out, "not empty") {
		t.Errorf("a second migrate into the same database: %v\n%s", err, out)
	}

	node := newSite(t, "", "")
	node.dsn = dsn
	node.start()
	node.waitReady()
	checkMigrated(t, node, tok)
	node.stop()

	back := filepath.Join(t.TempDir(), "back")
	if out, err := migrate(t, dsn, "--from", "postgres", "--to", "badger:"+back); err != nil {
		t.Fatalf("migrate back to Badger: %v\n%s", err, out)
	}
	checkMigrated(t, startSite(t, back, ""), tok)
}

// checkMigrated checks a Caddy on a migrated database: alice's token
// passes, she and the admin log in, the setting is there.
func checkMigrated(t *testing.T, s *site, tok secretToken) {
	t.Helper()
	if a := s.gatewayAs(tok.Token); a.status != http.StatusOK || string(a.body) != "hello alice" {
		t.Errorf("alice's token after the migration: %s", a)
	}
	s.login("alice", "alice-password-1")
	root := s.login(adminUser, adminPassword)
	var settings []struct{ Key, Value string }
	s.call(root, http.MethodGet, "/settings", nil, http.StatusOK, &settings)
	if len(settings) != 1 || settings[0].Value != "21" {
		t.Errorf("settings after the migration: %+v", settings)
	}
}
