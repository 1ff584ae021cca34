package admin

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/apitokens/caddy-api-tokens/storage"
)

func contains(body []byte, s string) bool { return bytes.Contains(body, []byte(s)) }

func TestRoutingErrorsAreJSON(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", 404, ""},
		{"GET", "/", 404, ""},
		{"GET", "/users/alice/tokens/x/y", 404, ""},
		{"GET", "/login", 405, "POST"},
		{"PUT", "/users", 405, "GET, HEAD, POST"},
		{"POST", "/settings/x", 405, "DELETE, GET, HEAD, PUT"},
	}
	for _, c := range cases {
		r := e.do(c.method, c.path, e.root, "")
		if r.status != c.status || r.header.Get("Allow") != c.allow {
			t.Errorf("%s %s = %d Allow %q; want %d Allow %q", c.method, c.path, r.status, r.header.Get("Allow"), c.status, c.allow)
			continue
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", c.method, c.path, ct)
		}
		r.errMsg(t)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	want := map[string]string{
		"Content-Type":            "application/json",
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
	}
	for _, r := range []resp{
		e.do("GET", "/me", e.root, ""),                 // success
		e.do("GET", "/me", "", ""),                     // 401
		e.do("GET", "/nope", "", ""),                   // mux 404
		e.do("POST", "/login", "", `{"username":"x"}`), // 400 before any auth
	} {
		for k, v := range want {
			if got := r.header.Get(k); got != v {
				t.Errorf("status %d: %s = %q; want %q", r.status, k, got, v)
			}
		}
	}
}

func TestUI(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("ui at " + r.URL.Path))
	})
	e := newEnv(t, func(c *Config) { c.UI = ui })
	r := e.must(http.StatusOK, "GET", "/ui/app.js", "", "") // no token needed for static files
	if string(r.body) != "ui at /ui/app.js" || r.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("UI answer %q headers %v", r.body, r.header)
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/ui", nil)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "ui/" {
		t.Errorf("GET /ui = %d Location %q; want a relative redirect to ui/", res.StatusCode, res.Header.Get("Location"))
	}

	plain := newEnv(t)
	plain.must(http.StatusNotFound, "GET", "/ui/", "", "")
}

func TestStrictJSON(t *testing.T) {
	e := newEnv(t)
	big := `{"username":"` + strings.Repeat("a", maxBodyBytes) + `","password":"x"}`
	cases := []struct {
		name, body, contentType string
		status                  int
		msg                     string
	}{
		{"trailing object", `{"username":"bob","password":"pw"}{}`, "application/json", 400, "after the JSON object"},
		{"trailing garbage", `{"username":"bob","password":"pw"} x`, "application/json", 400, "after the JSON object"},
		{"array", `[{"username":"bob"}]`, "application/json", 400, "must be a JSON object"},
		{"string", `"bob"`, "application/json", 400, "must be a JSON object"},
		{"null", `null`, "application/json", 400, "must be a JSON object"},
		{"truncated", `{"username":"bob"`, "application/json", 400, "ends too early"},
		{"syntax", `{"username":bob}`, "application/json", 400, "not valid JSON"},
		{"nested wrong type", `{"username":{"a":1},"password":"pw"}`, "application/json", 400, `field "username" must be a string`},
		{"form", `username=bob&password=pw`, "application/x-www-form-urlencoded", 415, "Content-Type: application/json"},
		{"multipart", "--x\r\n\r\n--x--", "multipart/form-data; boundary=x", 415, "Content-Type: application/json"},
		{"JSON as text/plain", `{"username":"bob","email":"bob@example.com","password":"pw-bob-1"}`, "text/plain", 415, "Content-Type: application/json"},
		{"JSON with no type", `{"username":"bob","email":"bob@example.com","password":"pw-bob-1"}`, "", 415, "Content-Type: application/json"},
		{"too large", big, "application/json", 413, "1 MiB"},
		{"too large after object", `{"username":"bob","password":"pw"}` + strings.Repeat(" ", maxBodyBytes), "application/json", 413, "1 MiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/users", e.root, c.body, "Content-Type", c.contentType)
			if r.status != c.status || !strings.Contains(r.errMsg(t), c.msg) {
				t.Errorf("status %d %s; want %d mentioning %q", r.status, r.body, c.status, c.msg)
			}
		})
	}
	// A page of another site can send text/plain or a form without the
	// browser asking the server first; it cannot send application/json.
	e.must(http.StatusNotFound, "GET", "/users/bob", e.root, "")
	if r := e.do("POST", "/users", e.root, `{"username":"bob","email":"bob@example.com","password":"pw-bob-1"}`, "Content-Type", "application/json; charset=utf-8"); r.status != http.StatusCreated {
		t.Errorf("application/json with a charset: %d %s", r.status, r.body)
	}
}

// TestBadInputChangesNothing sends malformed and refused requests and checks
// that each gets a 4xx and that nothing an admin can list has changed.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	_, tok := e.addToken("alice", "ci")
	e.must(http.StatusOK, "PUT", "/settings/"+storage.SettingNotificationDays, e.root, `{"value":"30"}`)
	before := e.snapshot()

	tokURL := "/users/alice/tokens/" + tok.ID
	bad := []struct{ method, path, token, body string }{
		{"POST", "/users", e.root, `{"username":"bob","password":"pw","admin":"true"}`},
		{"POST", "/users", e.root, `{"username":"bob","password":"pw","extra":1}`},
		{"POST", "/users", e.root, `{"username":"bob","password":"pw"} {}`},
		{"POST", "/users", e.root, `{"username":"bob","email":"bad","password":"pw"}`},
		{"POST", "/users", e.root, `{"username":"alice","password":"pw"}`},
		{"POST", "/users", alice, `{"username":"bob","password":"pw"}`},
		{"PATCH", "/users/alice", e.root, `{"email":"a@example.com","admin":1}`},
		{"PATCH", "/users/alice", e.root, `{"email":"a@example.com","password":""}`},
		{"PATCH", "/users/alice", alice, `{"email":"a@example.com","admin":true}`},
		{"PATCH", "/users/root", e.root, `{"admin":false}`},
		{"DELETE", "/users/root", e.root, ""},
		{"DELETE", "/users/alice", alice, ""},
		{"POST", "/users/alice/tokens", e.root, `{"name":"ci"}`},
		{"POST", "/users/alice/tokens", e.root, `{"name":"x","expires":"2030-02-01T00:00:00Z"}`},
		{"POST", "/users/alice/tokens", e.root, `{"name":"x","expires_at":"2040-01-01T00:00:00Z"}`},
		{"POST", "/users/alice/tokens", alice, `{"name":"x"}`},
		{"POST", tokURL + "/rotate", e.root, `{"grace":"30d"}`},
		{"POST", tokURL + "/rotate", e.root, `{"grace":"1h","x":1}`},
		{"POST", tokURL + "/rotate", alice, `{}`},
		{"DELETE", "/users/root/tokens/" + tok.ID, e.root, ""},
		{"PUT", "/settings/" + storage.SettingNotificationDays, e.root, `{"value":"400"}`},
		{"PUT", "/settings/Bogus", e.root, `{"value":"1"}`},
		{"PUT", "/settings/" + storage.SettingNotificationDays, alice, `{"value":"10"}`},
		{"DELETE", "/settings/" + storage.SettingNotificationEmails, e.root, ""},
		{"DELETE", "/settings/" + storage.SettingNotificationDays, alice, ""},
		{"POST", "/logout", "", ""},
		{"POST", "/login", "", `{"username":"alice","password":"` + userPassword + `","x":1}`},
		{"POST", "/login", "", `{"username":"alice"}`},
		{"POST", "/users", e.root, strings.Repeat("[", maxBodyBytes+1)},
	}
	for _, b := range bad {
		r := e.do(b.method, b.path, b.token, b.body)
		if r.status < 400 || r.status > 499 {
			t.Errorf("%s %s %.60s = %d %s; want 4xx", b.method, b.path, b.body, r.status, r.body)
		}
	}
	if after := e.snapshot(); after != before {
		t.Errorf("refused requests changed state:\nbefore %s\nafter  %s", before, after)
	}
}
