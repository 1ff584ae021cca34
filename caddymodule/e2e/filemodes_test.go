package e2e

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// The token database holds password and token hashes: whoever made its
// directory, and with whatever mode, Caddy and the commands leave it 0700
// and every file in it 0600.
func TestDataFilesAreTheOwnersOnly(t *testing.T) {
	work := t.TempDir()
	precreated := func(name string) string {
		dir := filepath.Join(work, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
			t.Fatal(err)
		}
		return dir
	}

	live := precreated("live")
	s := startSite(t, live, "")
	root := s.login(adminUser, adminPassword)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)
	checkPrivate(t, "a running gateway's", live)
	s.stop()
	checkPrivate(t, "a stopped gateway's", live)

	backup := filepath.Join(work, "db.backup")
	if out, err := runCaddy(t, "api-tokens", "backup", "--storage-path", live, "--output", backup); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	restored := precreated("restored")
	if out, err := runCaddy(t, "api-tokens", "restore", "--storage-path", restored, "--input", backup); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	checkPrivate(t, "a restored", restored)

	dsn := testtools.PostgresDatabase(t)
	if out, err := migrate(t, dsn, "--from", "badger:"+live, "--to", "postgres"); err != nil {
		t.Fatalf("migrate to PostgreSQL: %v\n%s", err, out)
	}
	migrated := precreated("migrated")
	if out, err := migrate(t, dsn, "--from", "postgres", "--to", "badger:"+migrated); err != nil {
		t.Fatalf("migrate to Badger: %v\n%s", err, out)
	}
	checkPrivate(t, "a migrated", migrated)
}

// checkPrivate fails unless dir is 0700 and every file in it 0600.
func checkPrivate(t *testing.T, what, dir string) {
	t.Helper()
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("%s directory %s has mode %v; want 0700", what, dir, info.Mode().Perm())
	}
	files := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		fi, err := d.Info()
		if err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s database's file %s has mode %v; want 0600", what, filepath.Base(path), fi.Mode().Perm())
		}
		return nil
	})
	if files == 0 {
		t.Errorf("%s directory %s holds no file", what, dir)
	}
}
