package alerts

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// TestPrometheusRules checks the shipped alerting rules with the real
// promtool: that they load, and that their unit tests pass. promtool comes
// from Debian's prometheus package (2.42 in Debian 12), unpacked rather than
// installed so no Prometheus server starts; building it with go install
// takes about twenty minutes on two cores.
func TestPrometheusRules(t *testing.T) {
	promtool := testtools.DebianPackageFile(t, "prometheus", "usr/bin/promtool")
	dir, err := filepath.Abs("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
