package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoginThrottleThroughCaddy checks the failed-login throttle as an
// attacker meets it at the real gateway: guessing one user's password is
// stopped per username, spraying many usernames is stopped per client
// address, and forged X-Forwarded-For or X-Real-IP headers do not buy a
// fresh budget (Caddy trusts no proxy unless trusted_proxies says so).
// Security headers come with every admin answer, 429s included.
func TestLoginThrottleThroughCaddy(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	login := func(user, password string, n int) answer {
		body := fmt.Sprintf(`{"username":%q,"password":%q}`, user, password)
		return raw(t, http.MethodPost, s.base()+"/login", "", strings.NewReader(body),
			"Content-Type", "application/json",
			"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", n), "X-Real-IP", fmt.Sprintf("203.0.113.%d", n))
	}
	s.call(s.login(adminUser, adminPassword), http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)

	// Spray: a different username each time, "from" a different address.
	var last answer
	for i := range 25 { // the address's limit is 20 failures, whatever the usernames
		last = login(fmt.Sprintf("sprayed%d", i), "guess", i)
		if last.status == http.StatusTooManyRequests {
			break
		}
		if last.status != http.StatusUnauthorized {
			t.Fatalf("spray attempt %d: %s", i, last)
		}
	}
	if last.status != http.StatusTooManyRequests || last.header.Get("Retry-After") == "" {
		t.Fatalf("spraying usernames with forged forwarding headers was never throttled: %s", last)
	}
	wantSecurityHeaders(t, "429", last)
	// The real user, from the same (real) address, is throttled too: the
	// address is what the attacker used up, and it cannot be forged.
	if a := login("alice", "alice-password-1", 99); a.status != http.StatusTooManyRequests {
		t.Errorf("login from the throttled address: %s, want 429", a)
	}
}

// TestSecurityHeadersOnAdminAnswers checks the headers that keep admin
// answers out of caches, frames and MIME sniffing, through Caddy.
func TestSecurityHeadersOnAdminAnswers(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	root := s.login(adminUser, adminPassword)
	for _, a := range []answer{
		s.call(root, http.MethodGet, "/users", nil, http.StatusOK, nil),
		s.call(root, http.MethodGet, "/nope", nil, http.StatusNotFound, nil),
		s.call("", http.MethodGet, "/me", nil, http.StatusUnauthorized, nil),
		s.call(root, http.MethodPost, "/users", map[string]string{"x": "y"}, http.StatusBadRequest, nil),
		s.call(root, http.MethodGet, "/backup", nil, http.StatusOK, nil),
		raw(t, http.MethodGet, s.base()+"/users/%2e%2e/settings", "Bearer "+root, nil),
	} {
		wantSecurityHeaders(t, fmt.Sprint(a.status), a)
	}
}

func wantSecurityHeaders(t *testing.T, what string, a answer) {
	t.Helper()
	for h, want := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
		"Cache-Control":          "no-store",
	} {
		if got := a.header.Get(h); got != want {
			t.Errorf("%s answer: %s = %q, want %q", what, h, got, want)
		}
	}
}
