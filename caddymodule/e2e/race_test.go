package e2e

import (
	"net/http"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentRotateAndDeleteThroughCaddy sends rotations, deletions and
// gateway requests for one token at once through the real Caddy: one
// delete wins (204), at most one rotation wins (201), every other answer
// is a 404 or 409 that says why, never a 5xx, and the gateway only ever
// answers 200 or 401.
func TestConcurrentRotateAndDeleteThroughCaddy(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	root := s.login(adminUser, adminPassword)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	s.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)

	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]map[int]int{"rotate": {}, "delete": {}, "gateway": {}}
	do := func(kind, method, path string) {
		<-start
		var a answer
		if kind == "gateway" {
			a = s.gatewayAs(tok.Token)
		} else {
			a = raw(t, method, s.base()+path, "Bearer "+root, nil, "Content-Type", "application/json")
			if a.status >= 400 {
				wantAdminError(t, kind, a)
			}
		}
		mu.Lock()
		statuses[kind][a.status]++
		mu.Unlock()
	}
	for range 6 {
		wg.Go(func() { do("rotate", http.MethodPost, "/users/alice/tokens/"+tok.ID+"/rotate") })
		wg.Go(func() { do("gateway", http.MethodGet, "") })
	}
	for range 3 {
		wg.Go(func() { do("delete", http.MethodDelete, "/users/alice/tokens/"+tok.ID) })
	}
	close(start)
	wg.Wait()

	t.Logf("statuses: %v", statuses)
	if statuses["delete"][http.StatusNoContent] != 1 || statuses["delete"][http.StatusNotFound] != 2 {
		t.Errorf("deletes answered %v, want one 204 and two 404", statuses["delete"])
	}
	if r := statuses["rotate"]; r[http.StatusCreated] > 1 || r[http.StatusCreated]+r[http.StatusConflict]+r[http.StatusNotFound] != 6 {
		t.Errorf("rotations answered %v, want at most one 201 and the rest 409 or 404", r)
	}
	if g := statuses["gateway"]; g[http.StatusOK]+g[http.StatusUnauthorized] != 6 {
		t.Errorf("the gateway answered %v, want only 200 or 401", g)
	}
	if a := s.gatewayAs(tok.Token); a.status != http.StatusUnauthorized {
		t.Errorf("the deleted token still passes: %s", a)
	}
}
