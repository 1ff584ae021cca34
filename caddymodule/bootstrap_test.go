package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestLoginBeforeAppStart is the start-up order Caddy may choose: the HTTP
// server answers a login before the api_tokens app's Start has run. The
// bootstrap admin must exist for it anyway.
func TestLoginBeforeAppStart(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()

	storageJSON, err := json.Marshal(map[string]string{"module": "test", "path": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	app := &App{StorageRaw: storageJSON, BootstrapAdmin: &BootstrapAdmin{Username: "root", Password: "root-password-1"}}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Cleanup()
	h := &AdminHandler{app: app}
	if err := h.provisionWith(ctx, app); err != nil {
		t.Fatal(err)
	}

	req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(`{"username":"root","password":"root-password-1"}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusCreated {
		t.Fatalf("login before Start: %d %s, want 201", rec.Code, rec.Body)
	}
	// Start afterwards finds the admin there and creates nothing more.
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer app.Stop()
	users, _, err := app.Store().ListUsersPage(context.Background(), "", 10)
	if err != nil || len(users) != 1 || users[0].Username != "root" {
		t.Fatalf("users after Start = %+v, %v; want only root", users, err)
	}
}
