package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestAdminAPIThroughCaddy walks the seed's flows (spec section 3) over
// real HTTP through Caddy: an admin from environment placeholders logs in,
// creates a user and a permanent token, the token is used through the
// gateway, rotated and deleted, settings are configured, and the audit log
// tells the story.
func TestAdminAPIThroughCaddy(t *testing.T) {
	dataDir := t.TempDir()
	clock := useFakeClock(dataDir)
	t.Setenv("API_TOKENS_TEST_ADMIN", "ops-admin")
	t.Setenv("API_TOKENS_TEST_ADMIN_PASSWORD", "from-the-environment-1")
	port, upstream := freePort(t), freePort(t)
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin {env.API_TOKENS_TEST_ADMIN} {env.API_TOKENS_TEST_ADMIN_PASSWORD}
		session_ttl 1h
		permanent_token_lifetime 90d
	}
}
%s
http://localhost:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		%s
	}
}
`, globalOptions, dataDir, echoSite(upstream), port, proxyWithPlaceholders(upstream)))
	var (
		base    = fmt.Sprintf("http://localhost:%d/api-tokens", port)
		gateway = fmt.Sprintf("http://localhost:%d/deploy", port)
	)

	// Log in as the bootstrap admin whose name and password came from
	// the environment.
	api(t, base, "", http.MethodPost, "/login", map[string]string{"username": "ops-admin", "password": "wrong"}, http.StatusUnauthorized, nil)
	adminToken := login(t, base, "ops-admin", "from-the-environment-1")
	var me storage.User
	api(t, base, adminToken, http.MethodGet, "/me", nil, http.StatusOK, &me)
	if me.Username != "ops-admin" || !me.Admin {
		t.Fatalf("GET /me = %+v, want the admin ops-admin", me)
	}

	// The admin creates a user and a permanent token for it.
	created := clock.Now()
	alice := createUserWithToken(t, base, adminToken, "alice", "deploy")
	if want := created.Add(90 * 24 * time.Hour); !alice.ExpiresAt.Equal(want) {
		t.Errorf("token expires at %s, want %s (permanent_token_lifetime 90d)", alice.ExpiresAt, want)
	}
	api(t, base, adminToken, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "deploy"}, http.StatusConflict, nil)
	api(t, base, adminToken, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "x", "expires": "2030-01-01T00:00:00Z"}, http.StatusBadRequest, nil)

	// The automation stores the secret and uses it through the gateway.
	if got := echoed(t, send(t, http.MethodGet, gateway, "Bearer "+alice.Token, nil)); got["user"] != "alice" || got["token_id"] != alice.ID {
		t.Fatalf("upstream saw %v, want alice's token %s", got, alice.ID)
	}
	// Alice may see her own tokens (never the secret), not other users.
	resp := send(t, http.MethodGet, base+"/users/alice/tokens", "Bearer "+alice.Token, nil)
	if resp.status != http.StatusOK || !strings.Contains(string(resp.body), alice.ID) || strings.Contains(string(resp.body), alice.Token) {
		t.Errorf("alice listing her tokens: %d %s", resp.status, resp.body)
	}
	api(t, base, alice.Token, http.MethodPost, "/users", map[string]string{"username": "mallory", "password": "x"}, http.StatusForbidden, nil)

	// Rotation: both secrets work during the grace period, then only the
	// new one; the admin's 1h login session ends on the way.
	var rotated newToken
	api(t, base, adminToken, http.MethodPost, "/users/alice/tokens/"+alice.ID+"/rotate", map[string]string{"grace": "1h"}, http.StatusCreated, &rotated)
	if rotated.Name != "deploy" || rotated.ID == alice.ID || rotated.Token == alice.Token {
		t.Fatalf("rotate returned %+v", rotated)
	}
	echoed(t, send(t, http.MethodGet, gateway, "Bearer "+alice.Token, nil))
	echoed(t, send(t, http.MethodGet, gateway, "Bearer "+rotated.Token, nil))
	clock.Advance(61 * time.Minute)
	wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+alice.Token, nil), true)
	echoed(t, send(t, http.MethodGet, gateway, "Bearer "+rotated.Token, nil))
	api(t, base, adminToken, http.MethodGet, "/me", nil, http.StatusUnauthorized, nil) // session_ttl 1h is over
	adminToken = login(t, base, "ops-admin", "from-the-environment-1")

	// Deleting the token stops it on the next request.
	api(t, base, adminToken, http.MethodDelete, "/users/alice/tokens/"+rotated.ID, nil, http.StatusNoContent, nil)
	wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+rotated.Token, nil), true)

	// The seed's system settings.
	api(t, base, adminToken, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "30"}, http.StatusOK, nil)
	api(t, base, adminToken, http.MethodPut, "/settings/UserTokenExpirationNotificationEmails", map[string]string{"value": "ops@example.com;sec@example.com"}, http.StatusOK, nil)
	api(t, base, adminToken, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "0"}, http.StatusBadRequest, nil)
	api(t, base, adminToken, http.MethodPut, "/settings/NoSuchSetting", map[string]string{"value": "1"}, http.StatusBadRequest, nil)
	var settings []storage.Setting
	api(t, base, adminToken, http.MethodGet, "/settings", nil, http.StatusOK, &settings)
	wantSettings := []storage.Setting{
		{Type: "AppConfig", Key: "EnableUserTokenNotification", Value: "30"},
		{Type: "AppConfig", Key: "UserTokenExpirationNotificationEmails", Value: "ops@example.com;sec@example.com"},
	}
	for _, want := range wantSettings {
		if !slices.Contains(settings, want) {
			t.Errorf("GET /settings = %+v, missing %+v", settings, want)
		}
	}
	api(t, base, adminToken, http.MethodGet, "/faults", nil, http.StatusOK, nil)

	// Logging out ends the temporary token everywhere.
	api(t, base, adminToken, http.MethodPost, "/logout", nil, http.StatusNoContent, nil)
	wantUnauthorized(t, send(t, http.MethodGet, gateway, "Bearer "+adminToken, nil), true)

	// The audit log tells who did what, and holds no secret.
	adminToken = login(t, base, "ops-admin", "from-the-environment-1")
	auditResp := send(t, http.MethodGet, base+"/audit?limit=100", "Bearer "+adminToken, nil)
	for _, secret := range []string{alice.Token, rotated.Token, "from-the-environment-1"} {
		if strings.Contains(string(auditResp.body), secret) {
			t.Errorf("the audit log contains a secret")
		}
	}
	var audit []storage.AuditEntry
	api(t, base, adminToken, http.MethodGet, "/audit?limit=100", nil, http.StatusOK, &audit)
	for _, action := range []string{
		storage.ActionLogin, storage.ActionLoginFailed, storage.ActionLogout, storage.ActionUserCreate,
		storage.ActionTokenCreate, storage.ActionTokenRotate, storage.ActionTokenDelete, storage.ActionSettingPut,
	} {
		i := slices.IndexFunc(audit, func(e storage.AuditEntry) bool { return e.Action == action })
		if i < 0 {
			t.Errorf("audit log has no %s entry: %+v", action, audit)
			continue
		}
		if action != storage.ActionLoginFailed && audit[i].Actor != "ops-admin" {
			t.Errorf("audit %s by %q, want ops-admin", action, audit[i].Actor)
		}
	}
	if len(audit) > 1 && audit[0].Time.Before(audit[len(audit)-1].Time) {
		t.Errorf("audit log is not newest first: %s ... %s", audit[0].Time, audit[len(audit)-1].Time)
	}
}

// TestAdminListsPageThroughCaddy: behind handle_path, which strips
// /api-tokens before the handler sees the request, a list's Link header
// still names /api-tokens, so a client that follows it as is gets the
// next page.
func TestAdminListsPageThroughCaddy(t *testing.T) {
	loadCaddy(t, fmt.Sprintf(`{
%s
	api_tokens {
		storage test {
			path %s
		}
		bootstrap_admin pager pager-password-1
	}
}
http://localhost:9202 {
	handle_path /api-tokens/* {
		api_token_admin
	}
}
`, globalOptions, t.TempDir()))
	const origin = "http://localhost:9202"
	adminToken := login(t, origin+"/api-tokens", "pager", "pager-password-1")
	for _, name := range []string{"ann", "ben", "cat", "dan"} {
		api(t, origin+"/api-tokens", adminToken, http.MethodPost, "/users", map[string]any{
			"username": name, "email": name + "@example.com", "password": "pw-" + name + "-long",
		}, http.StatusCreated, nil)
	}
	var names []string
	next := "/api-tokens/users?limit=2"
	for pages := 0; next != ""; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 5 users at limit=2; last link %q", next)
		}
		resp := send(t, http.MethodGet, origin+next, "Bearer "+adminToken, nil)
		var users []storage.User
		if resp.status != http.StatusOK || json.Unmarshal(resp.body, &users) != nil {
			t.Fatalf("GET %s = %d %s", next, resp.status, resp.body)
		}
		for _, u := range users {
			names = append(names, u.Username)
		}
		next = ""
		if link := resp.header.Get("Link"); link != "" {
			ref, ok := strings.CutSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
			if !ok || !strings.HasPrefix(ref, "/api-tokens/users?") || !strings.Contains(ref, "limit=2") {
				t.Fatalf("Link %q; want </api-tokens/users?...limit=2...>; rel=\"next\"", link)
			}
			next = ref
		}
	}
	if want := []string{"ann", "ben", "cat", "dan", "pager"}; !slices.Equal(names, want) {
		t.Errorf("paging through Caddy listed %v; want %v", names, want)
	}
}
