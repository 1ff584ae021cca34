package admin

import (
	"net/http"
	"strings"
	"testing"
)

// TestInvalidUTF8IsRefused sends bytes that are not UTF-8 inside JSON
// strings: each is a 400 that says so, and nothing is created (the JSON
// decoder alone would store U+FFFD in their place).
func TestInvalidUTF8IsRefused(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice")
	before := e.snapshot()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/users/alice/tokens", "{\"name\":\"ci\xff\"}"},
		{"POST", "/users", "{\"username\":\"bob\",\"email\":\"b\xc0@example.com\",\"password\":\"pw-bob-1\"}"},
		{"PATCH", "/users/alice", "{\"email\":\"\xed\xa0\x80@example.com\"}"},
		{"PUT", "/settings/UserTokenExpirationNotificationEmails", "{\"value\":\"ops@example.com\xfe\"}"},
	} {
		r := e.do(c.method, c.path, e.root, c.body)
		if r.status != http.StatusBadRequest || !strings.Contains(r.errMsg(t), "UTF-8") {
			t.Errorf("%s %s with invalid UTF-8 = %d %s; want 400 naming UTF-8", c.method, c.path, r.status, r.body)
		}
	}
	if after := e.snapshot(); after != before {
		t.Errorf("invalid UTF-8 changed state:\nbefore %s\nafter  %s", before, after)
	}
}
