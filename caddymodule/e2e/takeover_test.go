package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// A leaked permanent token cannot take over its account: it cannot set a
// password or an email, a session cannot without the current password,
// and what the token did is listed in the audit log by its id. Through
// the built Caddy, as an attacker holding a CI token would try it.
func TestLeakedTokenCannotTakeOverItsAccount(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	root := s.login(adminUser, adminPassword)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "ci-bot", "email": "ci@example.com", "password": "ci-password-1"}, http.StatusCreated, nil)
	var leaked, other secretToken
	s.call(root, http.MethodPost, "/users/ci-bot/tokens", map[string]string{"name": "github-actions"}, http.StatusCreated, &leaked)
	s.call(root, http.MethodPost, "/users/ci-bot/tokens", map[string]string{"name": "nightly"}, http.StatusCreated, &other)

	// The attacker, with the leaked token.
	for _, body := range []map[string]string{
		{"password": "attackers-password"},
		{"password": "attackers-password", "current_password": "a-guess"},
		{"email": "attacker@example.net"},
	} {
		a := s.call(leaked.Token, http.MethodPatch, "/users/ci-bot", body, http.StatusForbidden, nil)
		if !strings.Contains(string(a.body), "permanent tokens are for automation") {
			t.Errorf("PATCH %v with a permanent token: %s", body, a)
		}
	}
	s.call(leaked.Token, http.MethodDelete, "/users/ci-bot/tokens/"+other.ID, nil, http.StatusNoContent, nil)

	// A session of the user needs the current password, and a wrong one
	// is a failed login.
	session := s.login("ci-bot", "ci-password-1")
	s.call(session, http.MethodPatch, "/users/ci-bot", map[string]string{"password": "new-password-1"}, http.StatusBadRequest, nil)
	s.call(session, http.MethodPatch, "/users/ci-bot", map[string]string{"password": "new-password-1", "current_password": "a-guess"}, http.StatusForbidden, nil)
	s.call(session, http.MethodPatch, "/users/ci-bot", map[string]string{"password": "new-password-1", "current_password": "ci-password-1"}, http.StatusOK, nil)

	// The admin deletes the leaked token and asks what it did.
	s.call(root, http.MethodDelete, "/users/ci-bot/tokens/"+leaked.ID, nil, http.StatusNoContent, nil)
	s.call(leaked.Token, http.MethodGet, "/me", nil, http.StatusUnauthorized, nil)
	var entries []struct {
		Actor, Action, Target, Detail string
		ActorTokenID                  string `json:"actor_token_id"`
		ActorTokenKind                string `json:"actor_token_kind"`
	}
	s.call(root, http.MethodGet, "/audit?limit=100", nil, http.StatusOK, &entries)
	var byLeaked []string
	failedChange := false
	for _, e := range entries {
		if e.ActorTokenID == leaked.ID {
			byLeaked = append(byLeaked, e.Action+" "+e.Target)
			if e.ActorTokenKind != "permanent" {
				t.Errorf("entry %+v: kind %q", e, e.ActorTokenKind)
			}
		}
		failedChange = failedChange || e.Action == "login_failed" && e.Actor == "ci-bot" && e.ActorTokenID != "" && strings.Contains(e.Detail, "current_password")
	}
	if len(byLeaked) != 1 || byLeaked[0] != "token_delete "+other.ID {
		t.Errorf("audit entries of the leaked token: %q; want only its deletion of %s", byLeaked, other.ID)
	}
	if !failedChange {
		t.Errorf("the wrong current_password is not audited as a failed login with the session's id: %+v", entries)
	}
	// The attacker's password never took; the user's new one did.
	if a := raw(t, http.MethodPost, s.base()+"/login", "", strings.NewReader(`{"username":"ci-bot","password":"attackers-password"}`), "Content-Type", "application/json"); a.status != http.StatusUnauthorized {
		t.Errorf("login with the attacker's password: %s", a)
	}
	s.login("ci-bot", "new-password-1")
}
