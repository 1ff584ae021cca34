package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// Narrowing holds fleet-wide at revocation speed (section 7): a scope
// taken from a token, a scope taken from its user, and allowed networks
// replaced on node A are refused on nodes B and C within a second of A's
// answer.
func TestFleetNarrowingReachesEveryNodeWithinASecond(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	nodes := make([]*site, 3)
	for i := range nodes {
		nodes[i] = newSite(t, "", "")
		nodes[i].dsn = dsn
		nodes[i].appCfg = "scope deploy \"Trigger deployments\"\n\t\tscope reports:read \"Read reports\""
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
