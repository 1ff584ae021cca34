package admin

import (
	"net/http"
	"strings"
	"testing"
	"time"

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

		{"patch own email", "PATCH", "/users/alice", "alice", `{"email":"alice@corp.example","current_password":"` + userPassword + `"}`, 200, ""},
		{"patch own bad email", "PATCH", "/users/alice", "alice", `{"email":"x","current_password":"` + userPassword + `"}`, 400, "email"},
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
		e.must(http.StatusOK, "PATCH", "/users/alice", tokens["alice"], `{"password":"new-alice-pw","current_password":"`+userPassword+`"}`)
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

// Changing a password or email proves knowledge of the current password
// when it is one's own, and is never done with a permanent token: a
// leaked token must not be able to set a password that outlives it.
func TestCredentialChanges(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	alicePAT, _ := e.addToken("alice", "ci")
	rootPAT, _ := e.addToken(rootName, "provisioning")
	tokens := map[string]string{"root": e.root, "alice": alice, "alice-pat": alicePAT, "root-pat": rootPAT}
	cur := func(pw string) string { return `,"current_password":"` + pw + `"` }
	e.run(t, tokens, []call{
		{"own password without current_password", "PATCH", "/users/alice", "alice", `{"password":"new-pw-1"}`, 400, "send your current password as current_password"},
		{"own email without current_password", "PATCH", "/users/alice", "alice", `{"email":"a@corp.example"}`, 400, "current_password"},
		{"empty current_password", "PATCH", "/users/alice", "alice", `{"password":"new-pw-1"` + cur("") + `}`, 400, "current_password"},
		{"wrong current_password", "PATCH", "/users/alice", "alice", `{"password":"new-pw-1"` + cur("guess") + `}`, 403, "not your current password"},
		{"own permanent token", "PATCH", "/users/alice", "alice-pat", `{"password":"new-pw-1"` + cur(userPassword) + `}`, 403, "permanent tokens are for automation"},
		{"own permanent token, email", "PATCH", "/users/alice", "alice-pat", `{"email":"a@corp.example"` + cur(userPassword) + `}`, 403, "POST /login"},
		{"admin's permanent token on another user", "PATCH", "/users/alice", "root-pat", `{"password":"new-pw-1"}`, 403, "permanent tokens are for automation"},
		{"admin's permanent token, not a credential", "PATCH", "/users/alice", "root-pat", `{"admin":true}`, 200, ""},
		{"and back", "PATCH", "/users/alice", "root-pat", `{"admin":false}`, 200, ""},
		{"current_password alone", "PATCH", "/users/alice", "alice", `{"current_password":"` + userPassword + `"}`, 400, "nothing to change"},
		{"current_password with flags only", "PATCH", "/users/alice", "root", `{"disabled":false` + cur(rootPassword) + `}`, 400, "goes with a new password or email"},
		{"admin on another user with current_password", "PATCH", "/users/alice", "root", `{"password":"x"` + cur(rootPassword) + `}`, 400, "only for changing your own"},
		{"admin's own password without it", "PATCH", "/users/root", "root", `{"password":"new-root-pw"}`, 400, "current_password"},
		{"admin's own password", "PATCH", "/users/root", "root", `{"password":"new-root-pw"` + cur(rootPassword) + `}`, 200, ""},
		{"own password", "PATCH", "/users/alice", "alice", `{"password":"new-alice-pw","email":"a@corp.example"` + cur(userPassword) + `}`, 200, ""},
		{"admin resets another user's", "PATCH", "/users/alice", "root", `{"password":"reset-by-root"}`, 200, ""},
	})
	e.login("alice", "reset-by-root")
	e.login(rootName, "new-root-pw")

	t.Run("audited with the acting token", func(t *testing.T) {
		var entries []storage.AuditEntry
		e.must(http.StatusOK, "GET", "/audit?limit=1000", e.login(rootName, "new-root-pw"), "").decode(t, &entries)
		failed, ok := findAudit(entries, storage.ActionLoginFailed, "alice")
		if !ok || failed.Actor != "alice" || failed.ActorTokenKind != storage.Temporary || failed.ActorTokenID == "" || !strings.Contains(failed.Detail, "current_password") {
			t.Errorf("wrong current_password audited as %+v (found %v)", failed, ok)
		}
		var rootPATID string
		for _, a := range entries {
			if a.Action == storage.ActionUserUpdate && a.Target == "alice" && a.ActorTokenKind == storage.Permanent {
				rootPATID = a.ActorTokenID
			}
			if a.Action == storage.ActionUserUpdate && a.ActorTokenID == "" {
				t.Errorf("user_update without the acting token: %+v", a)
			}
		}
		var toks []storage.Token
		e.must(http.StatusOK, "GET", "/users/root/tokens", e.root, "").decode(t, &toks)
		found := false
		for _, tok := range toks {
			found = found || tok.Kind == storage.Permanent && tok.ID == rootPATID
		}
		if !found {
			t.Errorf("the change made with root's permanent token names token %q, not it (%+v)", rootPATID, toks)
		}
	})
}

// A wrong current_password counts as a failed login, so it guesses no
// faster than POST /login, and a throttled account gets 429 here too.
func TestCurrentPasswordIsThrottled(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	wrong := `{"password":"new-pw-1","current_password":"guess"}`
	for range 4 {
		e.must(http.StatusForbidden, "PATCH", "/users/alice", alice, wrong)
	}
	// One login failure from the same address makes five for the pair.
	e.must(http.StatusUnauthorized, "POST", "/login", "", `{"username":"alice","password":"guess"}`)
	r := e.must(http.StatusTooManyRequests, "PATCH", "/users/alice", alice, `{"password":"new-pw-1","current_password":"`+userPassword+`"}`)
	if r.header.Get("Retry-After") != "900" || !strings.Contains(r.errMsg(t), "too many failed logins") {
		t.Errorf("throttled change: Retry-After %q, %s", r.header.Get("Retry-After"), r.body)
	}
	e.must(http.StatusTooManyRequests, "POST", "/login", "", `{"username":"alice","password":"`+userPassword+`"}`)
	e.clock.Advance(15 * time.Minute)
	e.must(http.StatusOK, "PATCH", "/users/alice", alice, `{"password":"new-pw-1","current_password":"`+userPassword+`"}`)
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
