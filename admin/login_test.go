package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

func TestLogin(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice")
	e.addUser("bob")
	e.must(http.StatusOK, "PATCH", "/users/bob", e.root, `{"disabled":true}`)

	cases := []struct {
		name, body string
		status     int
		msg        string // substring of the error message
	}{
		{"wrong password", `{"username":"alice","password":"nope"}`, 401, "invalid username or password"},
		{"unknown user", `{"username":"nobody","password":"x"}`, 401, "invalid username or password"},
		{"disabled user", `{"username":"bob","password":"` + userPassword + `"}`, 401, "invalid username or password"},
		{"not a username", `{"username":"Alice Smith","password":"x"}`, 401, "invalid username or password"},
		{"missing password", `{"username":"alice"}`, 400, "required"},
		{"empty body", ``, 400, "empty"},
		{"unknown field", `{"username":"alice","password":"x","remember":true}`, 400, `unknown field "remember"`},
		{"wrong type", `{"username":"alice","password":1}`, 400, `field "password" must be a string`},
		{"not JSON", `username=alice&password=x`, 400, "not valid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/login", "", c.body)
			if r.status != c.status || !strings.Contains(r.errMsg(t), c.msg) {
				t.Fatalf("status %d %s; want %d mentioning %q", r.status, r.body, c.status, c.msg)
			}
		})
	}

	t.Run("success", func(t *testing.T) {
		var out loginResponse
		e.must(http.StatusCreated, "POST", "/login", "", `{"username":"alice","password":"`+userPassword+`"}`).decode(t, &out)
		if _, ok := secret.Parse(out.Token); !ok || !strings.HasPrefix(out.Token, secret.TemporaryPrefix) {
			t.Errorf("token %q is not a temporary secret", out.Token)
		}
		if out.Kind != storage.Temporary || out.User.Username != "alice" || out.User.Email != "alice@example.com" {
			t.Errorf("response %+v", out)
		}
		if want := testStart.Add(DefaultSessionTTL); !out.ExpiresAt.Equal(want) || out.ExpiresAt.Location() != time.UTC {
			t.Errorf("expires_at = %v; want %v in UTC", out.ExpiresAt, want)
		}
		var me storage.User
		e.must(http.StatusOK, "GET", "/me", out.Token, "").decode(t, &me)
		if me.Username != "alice" {
			t.Errorf("GET /me with the new token = %+v", me)
		}
		if a, ok := findAudit(e.audit(), storage.ActionLogin, out.ID); !ok || a.Actor != "alice" {
			t.Errorf("no login audit entry by alice for %s: %+v", out.ID, a)
		}
	})

	t.Run("failures audited without the password", func(t *testing.T) {
		entries := e.audit()
		a, ok := findAudit(entries, storage.ActionLoginFailed, "alice")
		if !ok || a.Actor != "alice" || a.ClientIP == "" {
			t.Errorf("failed login of alice audited as %+v (found %v)", a, ok)
		}
		// Nobody to tell, and anyone can make them up without end: failures
		// for usernames that do not exist (or cannot) are not stored.
		for _, target := range []string{"", "nobody", "Alice Smith"} {
			if a, ok := findAudit(entries, storage.ActionLoginFailed, target); ok {
				t.Errorf("failed login for the unknown username %q audited as %+v", target, a)
			}
		}
		for _, a := range entries {
			if strings.Contains(jsonBody(a), "nope") || strings.Contains(jsonBody(a), "Alice Smith") {
				t.Errorf("audit entry leaks login input: %+v", a)
			}
		}
	})
}

func TestLoginThrottle(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice")
	good := `{"username":"alice","password":"` + userPassword + `"}`
	bad := `{"username":"alice","password":"wrong"}`
	const home = "192.0.2.10" // where alice logs in from
	e.mustFrom(201, "POST", "/login", good, home)

	t.Run("one address guessing one user", func(t *testing.T) {
		for range 5 {
			e.mustFrom(401, "POST", "/login", bad, "198.51.100.1")
		}
		// The right password is refused too: the throttle is checked first.
		r := e.do("POST", "/login", "", good, ipHeader, "198.51.100.1")
		if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "900" {
			t.Fatalf("6th attempt = %d Retry-After %q; want 429 after 900s", r.status, r.header.Get("Retry-After"))
		}
		if msg := r.errMsg(t); !strings.Contains(msg, "too many failed logins") || !strings.Contains(msg, "900 seconds") {
			t.Errorf("message %q", msg)
		}
		e.clock.Advance(10 * time.Minute)
		r = e.do("POST", "/login", "", good, ipHeader, "198.51.100.1")
		if r.status != 429 || r.header.Get("Retry-After") != "300" {
			t.Fatalf("after 10m = %d Retry-After %q; want 429 after 300s", r.status, r.header.Get("Retry-After"))
		}
		e.clock.Advance(5 * time.Minute)
		e.mustFrom(201, "POST", "/login", good, "198.51.100.1")
	})

	t.Run("many addresses guessing one user cannot lock the user out", func(t *testing.T) {
		e.clock.Advance(15 * time.Minute)
		for i := range 5 {
			e.mustFrom(401, "POST", "/login", bad, fmt.Sprintf("203.0.113.%d", i))
		}
		r := e.do("POST", "/login", "", bad, ipHeader, "203.0.113.99")
		if r.status != 429 || r.header.Get("Retry-After") != "1" {
			t.Fatalf("6th address = %d Retry-After %q; want 429 after 1s", r.status, r.header.Get("Retry-After"))
		}
		e.mustFrom(201, "POST", "/login", good, home) // alice, from where she logged in before
		e.mustFrom(429, "POST", "/login", good, "192.0.2.77")
		e.clock.Advance(time.Second) // from a new address she waits out the backoff
		e.mustFrom(201, "POST", "/login", good, "192.0.2.77")
	})

	t.Run("one address spraying usernames", func(t *testing.T) {
		for i := range 20 {
			e.mustFrom(401, "POST", "/login", fmt.Sprintf(`{"username":"user%d","password":"x"}`, i), "203.0.113.50")
		}
		e.mustFrom(429, "POST", "/login", good, "203.0.113.50")
		e.mustFrom(201, "POST", "/login", good, "203.0.113.51") // alice elsewhere is fine
	})

}

// TestThrottleSurvivesReload: a config reload builds a new handler over
// the same database, which holds the counts, so it hands an attacker no
// fresh budget.
func TestThrottleSurvivesReload(t *testing.T) {
	var cfg Config
	e := newEnv(t, func(c *Config) { cfg = *c })
	bad := `{"username":"root","password":"wrong"}`
	for range 5 {
		e.must(http.StatusUnauthorized, "POST", "/login", "", bad)
	}
	reloaded := httptest.NewServer(New(cfg))
	defer reloaded.Close()
	res, err := http.Post(reloaded.URL+"/login", "application/json", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after a reload = %d; want 429", res.StatusCode)
	}
}

// mustFrom sends a login-style unauthenticated request from a client address.
func (e *env) mustFrom(want int, method, path, body, ip string) {
	e.t.Helper()
	if r := e.do(method, path, "", body, ipHeader, ip); r.status != want {
		e.t.Fatalf("%s %s from %s = %d %s; want %d", method, path, ip, r.status, r.body, want)
	}
}

func TestLogout(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice")
	sec, _ := e.addToken("alice", "ci")
	var session loginResponse
	e.must(http.StatusCreated, "POST", "/login", "", `{"username":"alice","password":"`+userPassword+`"}`).decode(t, &session)

	r := e.must(http.StatusBadRequest, "POST", "/logout", sec, "")
	if msg := r.errMsg(t); !strings.Contains(msg, "DELETE /users/{username}/tokens/{id}") {
		t.Errorf("logout with a permanent token: %q does not say how to delete it", msg)
	}
	e.must(http.StatusOK, "GET", "/me", sec, "") // and it still works

	e.must(http.StatusNoContent, "POST", "/logout", session.Token, "")
	e.must(http.StatusUnauthorized, "GET", "/me", session.Token, "")
	e.must(http.StatusUnauthorized, "POST", "/logout", session.Token, "")
	e.must(http.StatusUnauthorized, "POST", "/logout", "", "")
	if a, ok := findAudit(e.audit(), storage.ActionLogout, session.ID); !ok || a.Actor != "alice" {
		t.Errorf("no logout audit entry by alice for %s: %+v", session.ID, a)
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	session := e.addUser("alice")
	disabled := e.addUser("bob")
	e.must(http.StatusOK, "PATCH", "/users/bob", e.root, `{"disabled":true}`)
	expiring := e.login("alice", userPassword)

	cases := []struct {
		name, header string
		status       int
		challenge    string
	}{
		{"no header", "", 401, `Bearer realm="api_tokens"`},
		// Another scheme is no bearer token at all: no error code (RFC
		// 6750, section 3.1), the same answer as the gateway's.
		{"basic scheme", "Basic YWxpY2U6eA==", 401, `Bearer realm="api_tokens"`},
		{"garbage token", "Bearer not-a-token", 401, `Bearer realm="api_tokens", error="invalid_token"`},
		{"well-formed unknown token", "Bearer " + secret.New(storage.Permanent), 401, `Bearer realm="api_tokens", error="invalid_token"`},
		{"disabled user", "Bearer " + disabled, 401, `Bearer realm="api_tokens", error="invalid_token"`},
		{"lowercase scheme", "bearer " + session, 200, ""},
		{"uppercase scheme", "BEARER " + session, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("GET", "/me", "", "", "Authorization", c.header)
			if r.status != c.status {
				t.Fatalf("status %d %s; want %d", r.status, r.body, c.status)
			}
			if got := r.header.Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("WWW-Authenticate %q; want %q", got, c.challenge)
			}
			if c.status == 401 && strings.Contains(string(r.body), "not-a-token") {
				t.Errorf("401 body echoes the token: %s", r.body)
			}
		})
	}

	t.Run("two Authorization headers are refused, even if both are valid", func(t *testing.T) {
		req, err := http.NewRequest("GET", e.srv.URL+"/me", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Add("Authorization", "Bearer "+session)
		req.Header.Add("Authorization", "Bearer "+session)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		r := resp{status: res.StatusCode, header: res.Header, body: b}
		if r.status != http.StatusUnauthorized {
			t.Fatalf("status %d %s; want 401", r.status, r.body)
		}
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="api_tokens", error="invalid_token"` {
			t.Errorf("WWW-Authenticate %q", got)
		}
		if msg := r.errMsg(t); !strings.Contains(msg, "one Authorization header") {
			t.Errorf("message %q does not say what to fix", msg)
		}
	})

	t.Run("expired session", func(t *testing.T) {
		e.clock.Advance(DefaultSessionTTL)
		r := e.must(http.StatusUnauthorized, "GET", "/me", expiring, "")
		if msg := r.errMsg(t); !strings.Contains(msg, "expired") {
			t.Errorf("message %q does not say the token expired", msg)
		}
	})
}

// gatedStore holds every RecordLoginFailure until the test opens its gate.
type gatedStore struct {
	Store
	gate chan struct{}
}

func (g gatedStore) RecordLoginFailure(ctx context.Context, e storage.AuditEntry, window time.Duration) (bool, error) {
	<-g.gate
	return g.Store.RecordLoginFailure(ctx, e, window)
}

// A failed login is recorded after the client has its whole 401: how long
// the answer takes cannot tell a user who exists (whose failure is
// written to the audit log) from one who does not (whose failure is not).
func TestLoginFailureIsRecordedAfterTheAnswer(t *testing.T) {
	gate := make(chan struct{})
	e := newEnv(t, func(c *Config) { c.Store = gatedStore{c.Store, gate} })
	e.addUser("alice")
	for _, user := range []string{"alice", "nobody"} {
		done := make(chan resp, 1)
		go func() { done <- e.do("POST", "/login", "", `{"username":"`+user+`","password":"wrong"}`) }()
		select {
		case r := <-done:
			if r.status != http.StatusUnauthorized {
				t.Fatalf("%s: %d %s", user, r.status, r.body)
			}
		case <-time.After(10 * time.Second):
			close(gate) // let the handler finish, so the server can close
			t.Fatalf("%s: the 401 waited for the failure to be recorded", user)
		}
		gate <- struct{}{}
	}
	// The handler writes it once the gate lets it: wait for that.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := findAudit(e.audit(), storage.ActionLoginFailed, "alice"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's failure was not audited once the gate opened")
		}
	}
}
