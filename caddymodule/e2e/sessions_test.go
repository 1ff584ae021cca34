package e2e

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// A user holds at most max_sessions_per_user sessions (50 by default): the
// 51st login ends the oldest session, on every node at once, audited, and
// leaves the other 49 alone.
func TestFleetSessionCap(t *testing.T) {
	nodes := startFleet(t, 2, testtools.PostgresDatabase(t), "")
	a, b := nodes[0], nodes[1]
	root := a.login(adminUser, adminPassword)
	a.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)
	sessions := make([]string, 50)
	for i := range sessions {
		sessions[i] = nodes[i%2].login("alice", "alice-password-1")
	}
	for i, n := range nodes {
		if ans := n.gatewayAs(sessions[0]); ans.status != http.StatusOK {
			t.Fatalf("alice's first of 50 sessions on node %d: %s", i, ans)
		}
	}
	delays := refusalDelays(t, nodes, sessions[0], func() { b.login("alice", "alice-password-1") })
	t.Logf("the first session refused after the 51st login: %v", delays)
	if slices.Max(delays) >= time.Second {
		t.Errorf("the oldest session outlived the 51st login by %v on a node; the bound is 1s", slices.Max(delays))
	}
	for i, n := range nodes {
		if ans := n.gatewayAs(sessions[1]); ans.status != http.StatusOK {
			t.Errorf("alice's second session on node %d after the 51st login: %s", i, ans)
		}
	}
	var audit []struct {
		Action, Target, Detail string
	}
	a.call(root, http.MethodGet, "/audit?limit=5", nil, http.StatusOK, &audit)
	ended := 0
	for _, e := range audit {
		if e.Action == "session_ended" {
			ended++
			t.Logf("audited: %+v", e)
		}
	}
	if ended != 1 {
		t.Errorf("%d session_ended entries among the newest audit entries %+v; want 1", ended, audit)
	}
}
