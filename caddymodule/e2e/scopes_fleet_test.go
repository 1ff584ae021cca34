package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

const (
	catalogueDeployAndRead = "scope deploy \"Trigger deployments\"\n\t\tscope reports:read \"Read reports\""
	catalogueDeployOnly    = "scope deploy \"Trigger deployments\""
)

// startScopedFleet starts a node per catalogue on one database, each
// gateway requiring the deploy scope.
func startScopedFleet(t *testing.T, dsn string, catalogues ...string) []*site {
	t.Helper()
	nodes := make([]*site, len(catalogues))
	for i, catalogue := range catalogues {
		nodes[i] = newSite(t, "", "")
		nodes[i].dsn = dsn
		nodes[i].appCfg = catalogue
		nodes[i].editCfg = func(cfg string) string {
			scoped := strings.Replace(cfg, "\t\tapi_token_auth\n", "\t\tapi_token_auth {\n\t\t\trequire_scope deploy\n\t\t}\n", 1)
			if scoped == cfg {
				t.Fatal("the gateway's api_token_auth line was not found")
			}
			return scoped
		}
		nodes[i].start()
	}
	for _, n := range nodes {
		n.waitReady()
	}
	return nodes
}

// A node that does not declare a scope a token carries refuses the token
// on its scoped routes, and says so in its log once, not per request;
// the node that declares it lets the token through.
func TestFleetNodeRefusesScopesItDoesNotDeclare(t *testing.T) {
	nodes := startScopedFleet(t, testtools.PostgresDatabase(t), catalogueDeployAndRead, catalogueDeployOnly)
	a, b := nodes[0], nodes[1]
	root := a.login(adminUser, adminPassword)
	a.call(root, http.MethodPost, "/users", map[string]any{
		"username": "ci", "password": "ci-password-1", "scopes": []string{"deploy", "reports:read"},
	}, http.StatusCreated, nil)
	var tok struct {
		Token string `json:"token"`
		ID    string `json:"id"`
	}
	a.call(root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "ci"}, http.StatusCreated, &tok)
	if ans := a.gatewayAs(tok.Token); ans.status != http.StatusOK {
		t.Fatalf("node A, which declares both scopes: %s", ans)
	}
	for range 3 {
		if ans := b.gatewayAs(tok.Token); ans.status != http.StatusForbidden || !strings.Contains(ans.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Fatalf("node B, which does not declare reports:read: %s %v", ans, ans.header)
		}
	}
	const line = "a token carries scopes this node does not declare"
	if n := strings.Count(b.output(), line); n != 1 {
		t.Errorf("node B logged %q %d times for 3 refusals; want once", line, n)
	}
	if !strings.Contains(b.output(), `"undeclared_scopes":"reports:read"`) || !strings.Contains(b.output(), tok.ID) {
		t.Errorf("node B's log does not name the scope and the token:\n%s", b.output())
	}
	if strings.Contains(a.output(), line) {
		t.Error("node A, which declares every scope, logged an undeclared one")
	}
}

// Narrowing holds fleet-wide at revocation speed (section 7): a scope
// taken from a token, a scope taken from its user, and allowed networks
// replaced on node A are refused on nodes B and C within a second of A's
// answer.
func TestFleetNarrowingReachesEveryNodeWithinASecond(t *testing.T) {
	nodes := startScopedFleet(t, testtools.PostgresDatabase(t), catalogueDeployAndRead, catalogueDeployAndRead, catalogueDeployAndRead)
	a, others := nodes[0], nodes[1:]
	root := a.login(adminUser, adminPassword)
	a.call(root, http.MethodPost, "/users", map[string]any{
		"username": "ci", "password": "ci-password-1", "scopes": []string{"deploy", "reports:read"},
	}, http.StatusCreated, nil)
	tokens := make([]struct {
		Token  string   `json:"token"`
		ID     string   `json:"id"`
		Scopes []string `json:"scopes"`
	}, 3)
	for i := range tokens {
		a.call(root, http.MethodPost, "/users/ci/tokens", map[string]any{"name": "ci-" + string(rune('a'+i))}, http.StatusCreated, &tokens[i])
		if !slices.Equal(tokens[i].Scopes, []string{"deploy", "reports:read"}) {
			t.Fatalf("token %d's scopes: %v", i, tokens[i].Scopes)
		}
		for j, n := range nodes {
			if ans := n.gatewayAs(tokens[i].Token); ans.status != http.StatusOK {
				t.Fatalf("token %d on node %d before narrowing: %s", i, j, ans)
			}
		}
	}
	for _, step := range []struct {
		name   string
		secret string
		act    func()
	}{
		{"deploy taken from the token", tokens[0].Token, func() {
			a.call(root, http.MethodPatch, "/users/ci/tokens/"+tokens[0].ID, map[string]any{"scopes": []string{"reports:read"}}, http.StatusOK, nil)
		}},
		{"allowed networks replaced", tokens[1].Token, func() {
			a.call(root, http.MethodPatch, "/users/ci/tokens/"+tokens[1].ID, map[string]any{"allowed_cidrs": []string{"10.0.0.0/8"}}, http.StatusOK, nil)
		}},
		{"deploy taken from the user", tokens[2].Token, func() {
			a.call(root, http.MethodPatch, "/users/ci", map[string]any{"scopes": []string{"reports:read"}}, http.StatusOK, nil)
		}},
	} {
		delays := refusalDelays(t, others, step.secret, step.act)
		t.Logf("%s: refused on B and C after %v", step.name, delays)
		if slices.Max(delays) >= time.Second {
			t.Errorf("%s: a node still accepted the token %v after node A's answer; the bound is 1s", step.name, slices.Max(delays))
		}
		for j, n := range nodes {
			if ans := n.gatewayAs(step.secret); ans.status != http.StatusForbidden {
				t.Errorf("%s: node %d answers %s, want 403", step.name, j, ans)
			}
		}
	}
}
