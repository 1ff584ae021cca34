package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// call is one request and the answer it must get.
type call struct {
	name, method, path string
	as                 string // "root", "alice", "bob" or "" for none
	body               string
	status             int
	msg                string // substring of the error message, if an error
}

// run sends each call as the named caller, in order (later calls may rely
// on earlier ones), and checks status and message.
func (e *env) run(t *testing.T, tokens map[string]string, calls []call) {
	t.Helper()
	for _, c := range calls {
		r := e.do(c.method, c.path, tokens[c.as], c.body)
		if r.status != c.status {
			t.Errorf("%s: %s %s as %q = %d %s; want %d", c.name, c.method, c.path, c.as, r.status, r.body, c.status)
			continue
		}
		if c.msg != "" && !strings.Contains(r.errMsg(t), c.msg) {
			t.Errorf("%s: message %s does not mention %q", c.name, r.body, c.msg)
		}
	}
}

func TestUsers(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"root": e.root, "alice": e.addUser("alice"), "bob": e.addUser("bob")}
	e.run(t, tokens, []call{
		{"create", "POST", "/users", "root", `{"username":"carol","email":"carol@example.com","password":"pw-carol-1","admin":false}`, 201, ""},
		{"create duplicate", "POST", "/users", "root", `{"username":"carol","email":"c@example.com","password":"pw"}`, 409, "carol"},
		{"create bad username", "POST", "/users", "root", `{"username":"Carol","password":"pw"}`, 400, "username"},
		{"create bad email", "POST", "/users", "root", `{"username":"dave","email":"not an email","password":"pw"}`, 400, "email"},
		{"create without password", "POST", "/users", "root", `{"username":"dave","email":"d@example.com"}`, 400, "password"},
		{"create admin typo", "POST", "/users", "root", `{"username":"dave","password":"pw","admn":true}`, 400, `unknown field "admn"`},
		{"create as non-admin", "POST", "/users", "alice", `{"username":"dave","password":"pw"}`, 403, "administrator"},
		{"create unauthenticated", "POST", "/users", "", `{"username":"dave","password":"pw"}`, 401, ""},

		{"list", "GET", "/users", "root", "", 200, ""},
		{"list as non-admin", "GET", "/users", "alice", "", 403, "administrator"},

		{"get self", "GET", "/users/alice", "alice", "", 200, ""},
		{"get other as non-admin", "GET", "/users/bob", "alice", "", 403, ""},
		{"get as admin", "GET", "/users/bob", "root", "", 200, ""},
		{"get missing", "GET", "/users/nobody", "root", "", 404, "nobody"},

		{"patch own email", "PATCH", "/users/alice", "alice", `{"email":"alice@corp.example"}`, 200, ""},
		{"patch own bad email", "PATCH", "/users/alice", "alice", `{"email":"x"}`, 400, "email"},
		{"patch own admin", "PATCH", "/users/alice", "alice", `{"admin":true}`, 403, "email and password"},
		{"patch own disabled", "PATCH", "/users/alice", "alice", `{"disabled":false}`, 403, "email and password"},
		{"patch other as non-admin", "PATCH", "/users/bob", "alice", `{"email":"b@example.com"}`, 403, ""},
		{"patch nothing", "PATCH", "/users/alice", "root", `{}`, 400, "nothing to change"},
		{"patch empty password", "PATCH", "/users/alice", "root", `{"password":""}`, 400, "password"},
		{"patch wrong type", "PATCH", "/users/alice", "root", `{"admin":"yes"}`, 400, `field "admin" must be true or false`},
		{"patch missing", "PATCH", "/users/nobody", "root", `{"email":"n@example.com"}`, 404, ""},

		{"delete as non-admin", "DELETE", "/users/carol", "alice", "", 403, ""},
		{"delete", "DELETE", "/users/carol", "root", "", 204, ""},
		{"delete again", "DELETE", "/users/carol", "root", "", 404, ""},
	})

	t.Run("created user is returned without secrets", func(t *testing.T) {
		r := e.must(http.StatusOK, "GET", "/users/alice", e.root, "")
		var u storage.User
		r.decode(t, &u)
		if u.Username != "alice" || u.Email != "alice@corp.example" || u.Admin || u.Disabled || !u.CreatedAt.Equal(testStart) {
			t.Errorf("alice = %+v", u)
		}
		if strings.Contains(string(r.body), "password") || strings.Contains(string(r.body), "hash") {
			t.Errorf("user JSON mentions a password: %s", r.body)
		}
	})

	t.Run("own password change ends the other sessions", func(t *testing.T) {
		otherSession := e.login("alice", userPassword)
		permanent, _ := e.addToken("alice", "deploy")
		e.must(http.StatusOK, "PATCH", "/users/alice", tokens["alice"], `{"password":"new-alice-pw"}`)
		e.must(http.StatusUnauthorized, "POST", "/login", "", `{"username":"alice","password":"`+userPassword+`"}`)
		e.login("alice", "new-alice-pw")
		e.must(http.StatusOK, "GET", "/me", tokens["alice"], "")        // the session that changed it
		e.must(http.StatusUnauthorized, "GET", "/me", otherSession, "") // a stolen session, say
		e.must(http.StatusOK, "GET", "/me", permanent, "")              // a separate credential
		if a, _ := findAudit(e.audit(), storage.ActionUserUpdate, "alice"); !strings.Contains(a.Detail, "other login sessions ended") {
			t.Errorf("audit of the password change = %+v", a)
		}
	})

	t.Run("admin's password reset ends every session", func(t *testing.T) {
		session := e.addUser("dave")
		e.must(http.StatusOK, "PATCH", "/users/dave", e.root, `{"password":"reset-by-root"}`)
		e.must(http.StatusUnauthorized, "GET", "/me", session, "")
		e.login("dave", "reset-by-root")
	})

	t.Run("disabling kills tokens at once", func(t *testing.T) {
		e.must(http.StatusOK, "GET", "/me", tokens["bob"], "")
		e.must(http.StatusOK, "PATCH", "/users/bob", e.root, `{"disabled":true}`)
		e.must(http.StatusUnauthorized, "GET", "/me", tokens["bob"], "")
	})

	t.Run("deleting kills tokens at once", func(t *testing.T) {
		secret, _ := e.addToken("alice", "ci")
		e.must(http.StatusOK, "GET", "/me", secret, "")
		e.must(http.StatusNoContent, "DELETE", "/users/alice", e.root, "")
		e.must(http.StatusUnauthorized, "GET", "/me", secret, "")
		e.must(http.StatusUnauthorized, "GET", "/me", tokens["alice"], "")
	})

	t.Run("mutations audited with actor", func(t *testing.T) {
		entries := e.audit()
		for _, want := range []struct{ action, target, actor string }{
			{storage.ActionUserCreate, "carol", "root"},
			{storage.ActionUserDelete, "carol", "root"},
			{storage.ActionUserUpdate, "bob", "root"},
			{storage.ActionUserUpdate, "alice", "alice"},
		} {
			a, ok := findAudit(entries, want.action, want.target)
			if !ok || a.Actor != want.actor {
				t.Errorf("audit %s %s: got %+v (found %v); want actor %s", want.action, want.target, a, ok, want.actor)
			}
		}
	})
}

func TestLastAdmin(t *testing.T) {
	e := newEnv(t)
	e.run(t, map[string]string{"root": e.root}, []call{
		{"delete last admin", "DELETE", "/users/root", "root", "", 409, "admin"},
		{"demote last admin", "PATCH", "/users/root", "root", `{"admin":false}`, 409, "admin"},
		{"disable last admin", "PATCH", "/users/root", "root", `{"disabled":true}`, 409, "admin"},
		{"second admin", "POST", "/users", "root", `{"username":"ops","email":"ops@example.com","password":"pw-ops-1","admin":true}`, 201, ""},
		{"demote one of two", "PATCH", "/users/root", "root", `{"admin":false}`, 200, ""},
	})
	// root is no admin any more: its token now gets 403 on admin routes.
	e.must(http.StatusForbidden, "GET", "/users", e.root, "")
}
