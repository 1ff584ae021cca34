package alerts

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// promtoolVersion pins promtool: Prometheus's Go module versions are
// v0.3MM.P for Prometheus 3.MM.P.
const promtoolVersion = "v0.316.0"

// TestPrometheusRules checks the shipped alerting rules with the real
// promtool: that they load, and that their unit tests pass.
func TestPrometheusRules(t *testing.T) {
	promtool := testtools.GoTool(t, "github.com/prometheus/prometheus/cmd/promtool", promtoolVersion, "promtool")
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
