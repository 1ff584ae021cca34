package admin

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeRequests sends arbitrary bytes as the body of every endpoint
// that reads JSON, through the real handler and store, as an administrator.
// Whatever the bytes, the answer is never a 5xx (and nothing panics), it
// matches the OpenAPI document, and a body the document refuses is refused.
func FuzzDecodeRequests(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"username":"fz","password":"pw-fuzz-1","email":"fz@example.com"}`,
		`{"name":"n","expires_at":"2030-02-01T00:00:00Z"}`, `{"grace":"1h"}`, `{"grace":"7d"}`,
		`{"value":"30;7;1"}`, `{"value":"ops@example.com"}`, `{"email":"a@example.com","admin":true,"disabled":false}`,
		`{"password":"pw"}`, `{"username":"alice","password":"` + userPassword + `"}`, `{"a":1}{}`, `{"value":"\ud800"}`,
		`{"name":"\u0000"}`, `{"expires_at":"0000-01-01T00:00:00Z","name":"x"}`, `{"grace":"1e9d"}`, "\xff\xfe{",
	} {
		f.Add([]byte(seed))
	}
	e := newEnv(f)
	c := contract(f)
	e.addUser("alice")
	_, tok := e.addToken("alice", "fuzz")
	endpoints := []struct{ method, path string }{
		{"POST", "/login"},
		{"POST", "/users"},
		{"PATCH", "/users/alice"},
		{"POST", "/users/alice/tokens"},
		{"POST", "/users/alice/tokens/" + tok.ID + "/rotate"},
		{"PUT", "/settings/EnableUserTokenNotification"},
		{"PUT", "/settings/UserTokenExpirationNotificationEmails"},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, ep := range endpoints {
			req := httptest.NewRequest(ep.method, ep.path, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.root)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			if rec.Code >= 500 || rec.Code < 200 {
				t.Fatalf("%s %s with body %q = %d %s", ep.method, ep.path, body, rec.Code, rec.Body)
			}
			if rec.Code >= 400 && !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"error":`)) {
				t.Fatalf("%s %s: error body %s is not an error object", ep.method, ep.path, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); rec.Code != http.StatusNoContent && ct != "application/json" {
				t.Fatalf("%s %s: Content-Type %q", ep.method, ep.path, ct)
			}
			if problems := c.Check(req, body, rec.Code, rec.Header(), rec.Body.Bytes()); problems != nil {
				t.Fatalf("body %q: %s", body, strings.Join(problems, "\n"))
			}
		}
	})
}
