package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAcknowledgedWritesSurviveSIGKILL creates a user, a token and a
// setting through a running Caddy, kills it with SIGKILL the moment the
// last 2xx arrives (no shutdown code runs), starts a new Caddy on the same
// directory, and finds all three: the user logs in, the token passes the
// gateway and the setting is listed.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	first := startSite(t, dir, "")
	root := first.login(adminUser, adminPassword)
	first.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	first.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)
	first.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "21"}, http.StatusOK, nil)
	first.kill()
	if ws, ok := first.cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("caddy was not killed by a signal: %v", first.cmd.ProcessState)
	}

	second := startSite(t, dir, "")
	if a := second.gatewayAs(tok.Token); a.status != http.StatusOK || string(a.body) != "hello alice" {
		t.Errorf("alice's token after SIGKILL and restart: %s", a)
	}
	second.login("alice", "alice-password-1")
	root = second.login(adminUser, adminPassword)
	var settings []struct{ Key, Value string }
	second.call(root, http.MethodGet, "/settings", nil, http.StatusOK, &settings)
	if !slices.Contains(settings, struct{ Key, Value string }{"EnableUserTokenNotification", "21"}) {
		t.Errorf("settings after SIGKILL and restart: %+v", settings)
	}
}

// TestStartupFailsClearlyOnBadStorage starts Caddy on storage it cannot
// use: each time it exits at start-up, non-zero, with a message that names
// the directory and the problem, instead of serving without a database.
func TestStartupFailsClearlyOnBadStorage(t *testing.T) {
	t.Run("locked by another process", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "db")
		startSite(t, dir, "") // holds the lock
		second := newSite(t, dir, "")
		second.start()
		wantStartupError(t, second.waitExit(), dir, dir+" is in use by another process")
	})
	t.Run("path under a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(file, "db")
		s := newSite(t, dir, "")
		s.start()
		wantStartupError(t, s.waitExit(), dir, "cannot create storage directory "+dir)
	})
	t.Run("new database on a read-only file system", func(t *testing.T) {
		mnt := mountTmpfs(t, "ro,size=1m")
		dir := filepath.Join(mnt, "db")
		s := newSite(t, dir, "")
		s.start()
		wantStartupError(t, s.waitExit(), dir, "read-only file system")
	})
	t.Run("existing database remounted read-only", func(t *testing.T) {
		mnt := mountTmpfs(t, "size=8m")
		dir := filepath.Join(mnt, "db")
		startSite(t, dir, "").stop()
		if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
			t.Fatalf("remount read-only: %v %s", err, out)
		}
		s := newSite(t, dir, "")
		s.start()
		wantStartupError(t, s.waitExit(), dir, "read-only file system")
	})
	t.Run("existing database on a full file system", func(t *testing.T) {
		mnt := mountTmpfs(t, "size=8m")
		dir := filepath.Join(mnt, "db")
		startSite(t, dir, "").stop()
		fill(t, filepath.Join(mnt, "filler"))
		s := newSite(t, dir, "")
		s.start()
		wantStartupError(t, s.waitExit(), dir, "no space left on device")
	})
}

// wantStartupError checks that the start-up output names the database the
// operator configured and the problem with it.
func wantStartupError(t *testing.T, output, dir, want string) {
	t.Helper()
	database := "opening the token database (Badger at " + dir + ")"
	if !strings.Contains(output, database) || !strings.Contains(output, want) {
		t.Errorf("start-up output does not say %q and %q:\n%s", database, want, output)
	}
}

// mountTmpfs mounts a small tmpfs with the given options, which is the only
// way to get a full or read-only file system that root cannot write to
// anyway. Mounting needs root (CAP_SYS_ADMIN); the project's test machines
// have it.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -t tmpfs -o %s (needs root): %v %s", opts, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

// TestDiskFullWhileRunningLosesNoAcknowledgedWrite fills the file system
// under a running Caddy and keeps creating users. Badger writes through
// memory-mapped files, so the kernel may kill Caddy (SIGBUS) when a page
// cannot be backed; the test accepts that (the gateway then fails closed:
// nothing answers) or error answers, but every user that got a 201 must
// be there after space is freed and Caddy restarts.
func TestDiskFullWhileRunningLosesNoAcknowledgedWrite(t *testing.T) {
	mnt := mountTmpfs(t, "size=4m")
	dir := filepath.Join(mnt, "db")
	s := startSite(t, dir, "")
	root := s.login(adminUser, adminPassword)
	fill(t, filepath.Join(mnt, "filler"))
	var acked []string
	failed := 0
	for i := 0; i < 60 && failed < 3; i++ {
		name := fmt.Sprintf("user%d", i)
		req, _ := http.NewRequest(http.MethodPost, s.base()+"/users",
			strings.NewReader(`{"username":"`+name+`","password":"password-of-`+name+`"}`))
		req.Header.Set("Authorization", "Bearer "+root)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			failed++ // Caddy died: nothing was acknowledged
			continue
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
			acked = append(acked, name)
		case resp.StatusCode >= 500:
			failed++
		default:
			t.Fatalf("creating %s on a full disk answered %d", name, resp.StatusCode)
		}
	}
	t.Logf("on a full disk: %d users acknowledged before writes failed (%d failures)", len(acked), failed)
	s.kill()
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	again := startSite(t, dir, "")
	root = again.login(adminUser, adminPassword)
	for _, name := range acked {
		again.call(root, http.MethodGet, "/users/"+name, nil, http.StatusOK, nil)
	}
}
