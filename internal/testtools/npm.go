package testtools

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Pinned npm packages the tests run.
const (
	RedoclyCLI        = "@redocly/cli@2.77.0"
	OpenAPITypeScript = "openapi-typescript@7.13.0"
	OpenAPIFetch      = "openapi-fetch@0.17.0"
	TypeScript        = "typescript@5.9.3"
)

// NPMPackages installs the npm packages specs (each "name@version", pinned)
// together into one directory of the tool cache, on first use, and returns
// that directory: its node_modules holds them. The same set of specs is
// installed once and shared by every test process.
func NPMPackages(tb testing.TB, specs ...string) string {
	tb.Helper()
	for _, s := range specs {
		if at := strings.LastIndex(s, "@"); at <= 0 || at == len(s)-1 {
			tb.Fatalf("npm package %q is not pinned as name@version", s)
		}
	}
	npm := npmProgram(tb)
	installMu.Lock()
	defer installMu.Unlock()
	sum := sha256.Sum256([]byte(strings.Join(specs, "\n")))
	dir := filepath.Join(CacheDir(tb), "npm", fmt.Sprintf("%x", sum[:8]))
	if exists(filepath.Join(dir, "node_modules")) {
		return dir
	}
	// Install into a private dir, then rename, under a lock shared with
	// the other test processes, so nobody runs a half-installed package.
	lock := filepath.Join(CacheDir(tb), "npm.lock")
	tmp := filepath.Join(CacheDir(tb), "npm", ".install-"+fmt.Sprintf("%x", sum[:8]))
	script := fmt.Sprintf(`set -e; exec 9>%q; flock 9; [ -d %q ] && exit 0
rm -rf %q; mkdir -p %q; cd %q; printf '{"private":true}\n' > package.json
%q install --no-audit --no-fund --loglevel=error --save-exact "$@"
rm -rf %q; mv %q %q`, lock, filepath.Join(dir, "node_modules"), tmp, tmp, tmp, npm, dir, tmp, dir)
	cmd := exec.Command("bash", append([]string{"-c", script, "npm-install"}, specs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("npm install %s: %v\n%s", strings.Join(specs, " "), err, tail(out))
	}
	return dir
}

// NPMTool returns the path of the program bin of the npm package spec
// ("name@version"), installing it on first use.
func NPMTool(tb testing.TB, spec, bin string) string {
	tb.Helper()
	p := filepath.Join(NPMPackages(tb, spec), "node_modules", ".bin", bin)
	if !exists(p) {
		tb.Fatalf("npm package %s has no program %s", spec, bin)
	}
	return p
}

// NodeProgram returns the path of node, installing Debian's nodejs if it
// is missing.
func NodeProgram(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("node"); err == nil {
		return p
	}
	return DebianProgram(tb, "nodejs", "node")
}

func npmProgram(tb testing.TB) string {
	tb.Helper()
	NodeProgram(tb)
	if p, err := exec.LookPath("npm"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/npm"); err == nil {
		return "/usr/bin/npm"
	}
	return DebianProgram(tb, "npm", "npm")
}
