package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// TestBadInputEverywhere sends every admin endpoint malformed JSON, wrong
// types, unknown fields, huge, empty and odd values and path tricks, and
// the gateway odd Authorization headers, all through the real Caddy. Every
// answer is a 4xx (admin API: with a JSON error message; gateway: with a
// Bearer challenge), never a 5xx or a dropped connection, and afterwards
// nothing an admin can see has changed.
func TestBadInputEverywhere(t *testing.T) {
	s := startSite(t, filepath.Join(t.TempDir(), "db"), "")
	root := s.login(adminUser, adminPassword)
	s.call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": "alice-password-1"}, http.StatusCreated, nil)
	var tok secretToken
	s.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)
	s.call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "30"}, http.StatusOK, nil)
	alice := s.login("alice", "alice-password-1")
	before := snapshot(t, s, root)

	t.Run("bodies", func(t *testing.T) {
		for _, ep := range bodyEndpoints(tok.ID) {
			for _, b := range badBodies(ep.fields) {
				a := raw(t, ep.method, s.base()+ep.path, "Bearer "+root, strings.NewReader(b.body), "Content-Type", "application/json")
				wantAdminError(t, fmt.Sprintf("%s %s with %s", ep.method, ep.path, b.name), a)
			}
		}
	})
	t.Run("paths", func(t *testing.T) {
		for _, p := range badPaths(tok.ID) {
			a := rawRequest(t, s.port, p.method, "/api-tokens"+p.path, "Bearer "+root, p.body)
			wantAdminError(t, fmt.Sprintf("%s %q", p.method, p.path), a)
		}
	})
	t.Run("admin API authorization", func(t *testing.T) {
		for _, h := range badAuthorizations(tok.Token) {
			for _, ep := range []struct{ method, path string }{{"GET", "/me"}, {"GET", "/users"}, {"DELETE", "/users/alice"}, {"PUT", "/settings/EnableUserTokenNotification"}, {"GET", "/backup"}} {
				a := rawRequest(t, s.port, ep.method, "/api-tokens"+ep.path, h.value, `{"value":"1"}`)
				if a.status != http.StatusUnauthorized && a.status != http.StatusRequestHeaderFieldsTooLarge && a.status != http.StatusBadRequest {
					t.Errorf("%s %s with Authorization %s: %s, want 401", ep.method, ep.path, h.name, a)
				}
			}
		}
		// A valid non-admin token is not enough for admin endpoints.
		for _, path := range []string{"/users", "/tokens", "/settings", "/faults", "/audit", "/backup"} {
			wantAdminError(t, "alice GET "+path, raw(t, "GET", s.base()+path, "Bearer "+alice, nil))
		}
	})
	t.Run("gateway authorization", func(t *testing.T) {
		for _, h := range badAuthorizations(tok.Token) {
			a := rawRequest(t, s.port, "GET", "/app", h.value, "")
			switch {
			case a.status == http.StatusRequestHeaderFieldsTooLarge || a.status == http.StatusBadRequest:
				// refused by Caddy's HTTP parser before authentication
			case a.status != http.StatusUnauthorized || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), `Bearer realm="api_tokens"`):
				t.Errorf("gateway with Authorization %s: %s (%v), want 401 with a Bearer challenge", h.name, a, a.header)
			}
		}
	})

	if after := snapshot(t, s, root); after != before {
		t.Errorf("bad input changed what an admin sees:\nbefore %s\nafter  %s", before, after)
	}
	// And the data still works.
	if a := s.gatewayAs(tok.Token); a.status != http.StatusOK {
		t.Errorf("alice's token after the bad input: %s", a)
	}
}

type endpoint struct {
	method, path string
	fields       []string // the JSON fields it accepts
}

// bodyEndpoints lists every admin endpoint that reads a JSON body.
func bodyEndpoints(tokenID string) []endpoint {
	return []endpoint{
		{"POST", "/login", []string{"username", "password"}},
		{"POST", "/users", []string{"username", "email", "password", "admin"}},
		{"PATCH", "/users/alice", []string{"email", "password", "admin", "disabled"}},
		{"POST", "/users/alice/tokens", []string{"name", "expires_at"}},
		{"POST", "/users/alice/tokens/" + tokenID + "/rotate", []string{"grace"}},
		{"PUT", "/settings/EnableUserTokenNotification", []string{"value"}},
		{"PUT", "/settings/UserTokenExpirationNotificationEmails", []string{"value"}},
	}
}

type badBody struct{ name, body string }

// badBodies returns bodies that every endpoint must refuse. For each field
// the endpoint accepts, it also tries wrong types and odd values; where an
// endpoint would accept a value of the right type, the other fields are
// left out or broken so the whole request stays invalid.
func badBodies(fields []string) []badBody {
	bodies := []badBody{
		{"truncated JSON", `{"` + fields[0] + `":"x"`},
		{"syntax error", `{` + fields[0] + `: x}`},
		{"not an object", `["x"]`},
		{"a string", `"x"`},
		{"trailing data", `{"` + fields[0] + `":"x"} {"x":1}`},
		{"unknown field", `{"` + fields[0] + `":"x","expires":"2030-01-01T00:00:00Z"}`},
		{"misspelled field", `{"` + fields[0][1:] + `":"x"}`},
		{"over 1 MiB", `{"` + fields[0] + `":"` + strings.Repeat("a", 1<<20+10) + `"}`},
		{"invalid UTF-8", "{\"" + fields[0] + "\":\"\xff\xfe\"}"},
		{"BOM", "\ufeff{}"},
		{"deep nesting", strings.Repeat("[", 10000) + strings.Repeat("]", 10000)},
	}
	for _, f := range fields {
		bodies = append(bodies,
			badBody{f + " as a number", `{"` + f + `":12345}`},
			badBody{f + " as an object", `{"` + f + `":{"a":"b"}}`},
			badBody{f + " as an array", `{"` + f + `":["x"]}`},
			badBody{f + " duplicated with a wrong type", `{"` + f + `":"x","` + f + `":[1]}`},
		)
	}
	// Odd string values in the field an endpoint keys on (with the other
	// required fields missing or wrong, so a lenient parser that accepted
	// the odd value still could not succeed).
	for _, v := range []string{"", " ", "\u0000", "a\u0000b", "../../etc/passwd", "alice/../root", "\u202eevil", "ﬀ", "<script>alert(1)</script>", strings.Repeat("x", 100_000), "30;;;", "-1", "1e999", "0x10"} {
		js, _ := json.Marshal(v)
		bodies = append(bodies, badBody{fmt.Sprintf("%.20q in %s", v, fields[0]), `{"` + fields[0] + `":` + string(js) + `,"` + fields[0] + `_x":1}`})
	}
	return bodies
}

type badPath struct{ method, path, body string }

// badPaths are requests whose path (or method) is wrong or tricky; the
// request is sent byte for byte, without a client cleaning it.
func badPaths(tokenID string) []badPath {
	long := strings.Repeat("a", 5000)
	return []badPath{
		{"GET", "/users/ALICE", ""},
		{"GET", "/users/nobody", ""},
		{"GET", "/users/" + long, ""},
		{"GET", "/users/alice%00", ""},
		{"GET", "/users/alice%2F..%2Froot", ""},
		{"GET", "/users/%2e%2e/settings", ""},
		{"DELETE", "/users/alice/tokens/" + tokenID + "%2F..%2F..", ""},
		{"DELETE", "/users/root/tokens/" + tokenID, ""},
		{"DELETE", "/users/alice/tokens/tok_00000000000000000000", ""},
		{"POST", "/users/alice/tokens/../../settings", `{"name":"x"}`},
		{"POST", "/users/alice/tokens/" + tokenID + "/rotate/", `{}`},
		{"POST", "/users/nobody/tokens/" + tokenID + "/rotate", `{}`},
		{"PUT", "/settings/Bogus", `{"value":"1"}`},
		{"PUT", "/settings/enableusertokennotification", `{"value":"1"}`},
		{"PUT", "/settings/", `{"value":"1"}`},
		{"DELETE", "/settings/UserTokenExpirationNotificationEmails", ""},
		{"GET", "/tokens?expiring_within=soon", ""},
		{"GET", "/tokens?expiring_within=-1d", ""},
		{"GET", "/audit?limit=-5", ""},
		{"GET", "/audit?limit=abc", ""},
		{"PATCH", "/users", `{}`},
		{"TRACE", "/users", ""},
		{"GET", "/nope", ""},
		{"POST", "/users/alice/tokens/", `{"name":"x"}`},
	}
}

type authHeader struct{ name, value string }

// badAuthorizations are Authorization header values that must never pass.
func badAuthorizations(valid string) []authHeader {
	flipped := []byte(valid)
	last := len(flipped) - 1
	flipped[last] ^= 1
	if flipped[last] < '0' { // keep it printable
		flipped[last] = valid[last] + 1
	}
	return []authHeader{
		{"scheme only", "Bearer"},
		{"scheme and space", "Bearer "},
		{"Basic credentials", "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQtMQ=="},
		{"token without scheme", valid},
		{"token with other scheme", "Token " + valid},
		{"token with trailing junk", "Bearer " + valid + " x"},
		{"token with a changed character", "Bearer " + string(flipped)},
		{"token cut short", "Bearer " + valid[:len(valid)-1]},
		{"token with an extra character", "Bearer " + valid + "a"},
		{"token in upper case", "Bearer " + strings.ToUpper(valid)},
		{"prefix only", "Bearer " + valid[:strings.IndexByte(valid, '_')+1]},
		{"control character", "Bearer " + valid[:10] + "\x01" + valid[11:]},
		{"32 KiB of token", "Bearer " + strings.Repeat("a", 32<<10)},
		{"2 MiB header", "Bearer " + strings.Repeat("a", 2<<20)},
		{"non-ASCII", "Bearer " + valid[:8] + "é" + valid[10:]},
	}
}

// wantAdminError checks a 4xx with a JSON {"error": "..."} body.
func wantAdminError(t *testing.T, what string, a answer) {
	t.Helper()
	var body struct{ Error string }
	if a.status < 400 || a.status > 499 {
		t.Errorf("%s: %.300s, want a 4xx", what, a)
		return
	}
	if err := json.Unmarshal(a.body, &body); err != nil || body.Error == "" {
		t.Errorf("%s: %d with body %.200q, want a JSON error message", what, a.status, a.body)
	}
}

// rawRequest writes an HTTP/1.1 request byte for byte (no path cleaning,
// any header bytes) and reads the answer. A connection closed without an
// answer fails the test: that is what a crash looks like.
func rawRequest(t *testing.T, port int, method, path, authorization, body string) answer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n", method, path, port)
	if authorization != "" {
		fmt.Fprintf(&req, "Authorization: %s\r\n", authorization)
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.WriteString(body)
	// The server may answer and close before reading a huge header; the
	// answer is what counts.
	_, _ = conn.Write(req.Bytes())
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %.80s: no answer: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return answer{resp.StatusCode, resp.Header, b.Bytes()}
}

// snapshot is everything an admin can list, without last-used times
// (using a token to send bad input is a use).
func snapshot(t *testing.T, s *site, token string) string {
	t.Helper()
	var toks []storage.Token
	s.call(token, http.MethodGet, "/tokens", nil, http.StatusOK, &toks)
	for i := range toks {
		toks[i].LastUsedAt = nil
	}
	b, _ := json.Marshal(toks)
	out := string(b)
	for _, p := range []string{"/users", "/settings", "/audit?limit=1000"} {
		out += string(s.call(token, http.MethodGet, p, nil, http.StatusOK, nil).body)
	}
	return out
}
