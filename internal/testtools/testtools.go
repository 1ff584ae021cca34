// Package testtools is what the tests of every package share: it finds or
// installs, pinned, the outside programs that tests run against for real
// (Go tools from the module proxy, Debian packages, and a Caddy binary
// built with this plugin), gives each test a PostgreSQL database of its
// own, and has the fake clock that moves expiry in milliseconds.
//
// A tool that cannot be installed fails the test with the reason; it is
// never skipped, so a green suite means the real program ran.
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var installMu sync.Mutex // serializes installs inside one test binary

// CacheDir is where installed tools and the test Caddy binary live, shared
// by every test process and run (go test runs packages in parallel).
func CacheDir(tb testing.TB) string {
	tb.Helper()
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "caddy-api-tokens-tests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("creating tool cache: %v", err)
	}
	return dir
}

// GoTool returns the path of a Go program installed with
// `go install pkg@version`, installing it on first use. name is the binary's
// file name.
func GoTool(tb testing.TB, pkg, version, name string) string {
	tb.Helper()
	installMu.Lock()
	defer installMu.Unlock()
	bin := filepath.Join(CacheDir(tb), "gobin", version, name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	// Install into a private dir then rename, so parallel test processes
	// never run a half-written binary.
	tmp, err := os.MkdirTemp(CacheDir(tb), "install-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", pkg+"@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go install %s@%s: %v\n%s", pkg, version, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(filepath.Join(tmp, name), bin); err != nil && !exists(bin) {
		tb.Fatalf("installing %s: %v", name, err)
	}
	return bin
}

// DebianProgram returns the path of program, installing the Debian package
// pkg with apt-get when the program is not on PATH. Tests run as root on the
// project's machines; elsewhere, install the package by hand first.
func DebianProgram(tb testing.TB, pkg, program string) string {
	tb.Helper()
	installMu.Lock()
	defer installMu.Unlock()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	lock := filepath.Join(CacheDir(tb), "apt.lock")
	// apt-get takes its own lock; parallel test processes queue on ours via flock.
	script := fmt.Sprintf(`exec 9>%q; flock 9; command -v %s >/dev/null && exit 0; `+
		`export DEBIAN_FRONTEND=noninteractive; (apt-get install -y --no-install-recommends %s || (apt-get update && apt-get install -y --no-install-recommends %s))`,
		lock, program, pkg, pkg)
	if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
		tb.Fatalf("installing Debian package %s for %s (needs root and apt): %v\n%s", pkg, program, err, tail(out))
	}
	p, err := exec.LookPath(program)
	if err != nil {
		tb.Fatalf("package %s installed but %s is not on PATH", pkg, program)
	}
	return p
}

// RepoRoot returns the module's root directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		tb.Fatalf("locating go.mod: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// CaddyBinary builds Caddy with this plugin (./caddymodule/cmd/caddy) into
// the test's temp space once per test binary and returns its path.
func CaddyBinary(tb testing.TB) string {
	tb.Helper()
	caddyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-api-tokens-bin-")
		if err != nil {
			caddyErr = err
			return
		}
		caddyPath = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", caddyPath, "./caddymodule/cmd/caddy")
		cmd.Dir = RepoRoot(tb)
		if out, err := cmd.CombinedOutput(); err != nil {
			caddyErr = fmt.Errorf("go build caddy: %v\n%s", err, out)
		}
	})
	if caddyErr != nil {
		tb.Fatal(caddyErr)
	}
	return caddyPath
}

var (
	caddyOnce sync.Once
	caddyPath string
	caddyErr  error
)

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func tail(b []byte) string {
	const max = 4000
	if len(b) > max {
		return "..." + string(b[len(b)-max:])
	}
	return string(b)
}

// DebianPackageFile returns the path of one file from a Debian package,
// downloaded with `apt-get download` and unpacked into the cache without
// installing it: no services start, no dependencies are pulled, and no
// root is needed once the package lists are current. file is the path
// inside the package, e.g. "usr/bin/promtool".
func DebianPackageFile(tb testing.TB, pkg, file string) string {
	tb.Helper()
	installMu.Lock()
	defer installMu.Unlock()
	dir := filepath.Join(CacheDir(tb), "deb", pkg)
	path := filepath.Join(dir, file)
	if exists(path) {
		return path
	}
	lock := filepath.Join(CacheDir(tb), "apt.lock")
	script := fmt.Sprintf(`set -e; exec 9>%q; flock 9; [ -e %q ] && exit 0
tmp=$(mktemp -d %q/unpack-XXXXXX); cd "$tmp"
apt-get download %s >/dev/null 2>&1 || { apt-get update >/dev/null; apt-get download %s; }
dpkg-deb -x ./*.deb root; rm -rf %q; mkdir -p %q; mv root %q; cd /; rm -rf "$tmp"`,
		lock, path, CacheDir(tb), pkg, pkg, dir, filepath.Dir(dir), dir)
	if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
		tb.Fatalf("downloading Debian package %s: %v\n%s", pkg, err, tail(out))
	}
	if !exists(path) {
		tb.Fatalf("Debian package %s has no %s", pkg, file)
	}
	return path
}
