package admin

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

func TestCreateToken(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	e.addUser("bob")
	soon := testStart.Add(30 * 24 * time.Hour).Format(time.RFC3339)
	e.run(t, map[string]string{"root": e.root, "alice": alice}, []call{
		{"duplicate name", "POST", "/users/alice/tokens", "root", `{"name":"deploy"}`, 201, ""},
		{"duplicate name", "POST", "/users/alice/tokens", "root", `{"name":"deploy"}`, 409, "deploy"},
		{"earlier expiry", "POST", "/users/alice/tokens", "root", `{"name":"short","expires_at":"` + soon + `"}`, 201, ""},
		{"typo in field", "POST", "/users/alice/tokens", "root", `{"name":"x","expires":"` + soon + `"}`, 400, `unknown field "expires"`},
		{"no name", "POST", "/users/alice/tokens", "root", `{"expires_at":"` + soon + `"}`, 400, "name is required"},
		{"past expiry", "POST", "/users/alice/tokens", "root", `{"name":"x","expires_at":"2029-01-01T00:00:00Z"}`, 400, "in the future"},
		{"now expiry", "POST", "/users/alice/tokens", "root", `{"name":"x","expires_at":"` + testStart.Format(time.RFC3339) + `"}`, 400, "in the future"},
		{"beyond lifetime", "POST", "/users/alice/tokens", "root", `{"name":"x","expires_at":"2031-01-03T00:00:00Z"}`, 400, "365 days"},
		{"not RFC 3339", "POST", "/users/alice/tokens", "root", `{"name":"x","expires_at":"2030-02-01"}`, 400, "RFC 3339"},
		{"expiry wrong type", "POST", "/users/alice/tokens", "root", `{"name":"x","expires_at":5}`, 400, `field "expires_at" must be a string`},
		{"control char name", "POST", "/users/alice/tokens", "root", `{"name":"a\u0007b"}`, 400, "name"},
		{"unknown user", "POST", "/users/nobody/tokens", "root", `{"name":"x"}`, 404, ""},
		{"disable bob", "PATCH", "/users/bob", "root", `{"disabled":true}`, 200, ""},
		{"disabled user", "POST", "/users/bob/tokens", "root", `{"name":"x"}`, 400, "disabled"},
		{"non-admin for self", "POST", "/users/alice/tokens", "alice", `{"name":"mine"}`, 403, "administrator"},
	})

	var toks []storage.Token
	e.must(http.StatusOK, "GET", "/users/alice/tokens", alice, "").decode(t, &toks)
	byName := map[string]storage.Token{}
	for _, tk := range toks {
		byName[tk.Name] = tk
	}
	if d := byName["deploy"]; d.Kind != storage.Permanent || !d.ExpiresAt.Equal(testStart.Add(DefaultPermanentTokenLifetime)) || d.CreatedBy != "root" || d.Status != storage.StatusActive {
		t.Errorf("deploy = %+v; want permanent, active, by root, expiring in 365 days", d)
	}
	if s := byName["short"]; s.ExpiresAt.Format(time.RFC3339) != soon {
		t.Errorf("short expires %v; want %s", s.ExpiresAt, soon)
	}

	t.Run("secret shown once and works", func(t *testing.T) {
		var out newTokenResponse
		e.must(http.StatusCreated, "POST", "/users/alice/tokens", e.root, `{"name":"ci"}`).decode(t, &out)
		if !strings.HasPrefix(out.Secret, secret.PermanentPrefix) || out.Kind != storage.Permanent || out.Name != "ci" || out.User != "alice" || out.ID == "" {
			t.Fatalf("created %+v", out)
		}
		var me storage.User
		e.must(http.StatusOK, "GET", "/me", out.Secret, "").decode(t, &me)
		if me.Username != "alice" {
			t.Errorf("token authenticates as %q", me.Username)
		}
		for _, p := range []string{"/users/alice/tokens", "/tokens"} {
			if body := e.must(http.StatusOK, "GET", p, e.root, "").body; strings.Contains(string(body), out.Secret) {
				t.Errorf("GET %s shows the secret", p)
			}
		}
		if a, ok := findAudit(e.audit(), storage.ActionTokenCreate, out.ID); !ok || a.Actor != "root" || strings.Contains(jsonBody(a), out.Secret) {
			t.Errorf("token_create audit = %+v (found %v)", a, ok)
		}
	})
}

func TestCustomLifetime(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PermanentTokenLifetime = 90 * 24 * time.Hour })
	e.addUser("alice")
	_, tok := e.addToken("alice", "ci")
	if want := testStart.Add(90 * 24 * time.Hour); !tok.ExpiresAt.Equal(want) {
		t.Errorf("default expiry %v; want %v", tok.ExpiresAt, want)
	}
	r := e.must(http.StatusBadRequest, "POST", "/users/alice/tokens", e.root,
		`{"name":"long","expires_at":"`+testStart.Add(91*24*time.Hour).Format(time.RFC3339)+`"}`)
	if msg := r.errMsg(t); !strings.Contains(msg, "90 days") {
		t.Errorf("message %q does not state the 90-day limit", msg)
	}
}

func TestListAndDeleteTokens(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"root": e.root, "alice": e.addUser("alice"), "bob": e.addUser("bob")}
	aliceSecret, aliceTok := e.addToken("alice", "ci")
	bobSecret, bobTok := e.addToken("bob", "ci")
	aliceURL, bobURL := "/users/alice/tokens/"+aliceTok.ID, "/users/bob/tokens/"+bobTok.ID
	e.run(t, tokens, []call{
		{"list own", "GET", "/users/alice/tokens", "alice", "", 200, ""},
		{"list other's", "GET", "/users/bob/tokens", "alice", "", 403, ""},
		{"list as admin", "GET", "/users/bob/tokens", "root", "", 200, ""},
		{"list missing user's", "GET", "/users/nobody/tokens", "root", "", 404, "nobody"},
		{"all tokens as non-admin", "GET", "/tokens", "alice", "", 403, ""},
		{"get own", "GET", aliceURL, "alice", "", 200, ""},
		{"get other's", "GET", bobURL, "alice", "", 403, ""},
		{"get as admin", "GET", bobURL, "root", "", 200, ""},
		{"get other's under own name", "GET", "/users/alice/tokens/" + bobTok.ID, "alice", "", 404, ""},
		{"get missing", "GET", "/users/alice/tokens/tok_0000", "alice", "", 404, ""},
		{"delete other's", "DELETE", bobURL, "alice", "", 403, "owner"},
		{"delete other's under own name", "DELETE", "/users/alice/tokens/" + bobTok.ID, "alice", "", 404, ""},
		{"delete missing", "DELETE", "/users/alice/tokens/tok_0000", "alice", "", 404, ""},
		{"delete own", "DELETE", aliceURL, "alice", "", 204, ""},
		{"delete own again", "DELETE", aliceURL, "alice", "", 404, ""},
		{"admin deletes any", "DELETE", bobURL, "root", "", 204, ""},
	})
	e.must(http.StatusUnauthorized, "GET", "/me", aliceSecret, "")
	e.must(http.StatusUnauthorized, "GET", "/me", bobSecret, "")
	e.must(http.StatusNotFound, "GET", aliceURL, e.root, "")
	if a, ok := findAudit(e.audit(), storage.ActionTokenDelete, aliceTok.ID); !ok || a.Actor != "alice" {
		t.Errorf("token_delete audit = %+v; want actor alice", a)
	}
}

// GET on one token answers what the list shows of it, never its secret.
func TestGetOneToken(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	secret, tok := e.addToken("alice", "ci")
	e.must(http.StatusOK, "GET", "/me", secret, "") // a last use
	var listed []storage.Token
	e.must(http.StatusOK, "GET", "/users/alice/tokens", alice, "").decode(t, &listed)
	r := e.must(http.StatusOK, "GET", "/users/alice/tokens/"+tok.ID, alice, "")
	var got storage.Token
	r.decode(t, &got)
	var want storage.Token
	for _, l := range listed {
		if l.ID == tok.ID {
			want = l
		}
	}
	if jsonBody(got) != jsonBody(want) || strings.Contains(string(r.body), secret) {
		t.Errorf("GET one token = %s; want what the list shows, %s", r.body, jsonBody(want))
	}
}

func TestRotateToken(t *testing.T) {
	e := newEnv(t)
	alice := e.addUser("alice")
	oldSecret, old := e.addToken("alice", "deploy")
	rotate := "/users/alice/tokens/" + old.ID + "/rotate"
	e.run(t, map[string]string{"root": e.root, "alice": alice}, []call{
		{"grace too long", "POST", rotate, "root", `{"grace":"8d"}`, 400, "at most 7d"},
		{"negative grace", "POST", rotate, "root", `{"grace":"-1h"}`, 400, "negative"},
		{"bad grace", "POST", rotate, "root", `{"grace":"soon"}`, 400, "grace"},
		{"grace wrong type", "POST", rotate, "root", `{"grace":3600}`, 400, `field "grace" must be a string`},
		{"unknown field", "POST", rotate, "root", `{"grace":"1h","keep":true}`, 400, `unknown field "keep"`},
		{"null body", "POST", rotate, "root", `null`, 400, "must be a JSON object"},
		{"non-admin", "POST", rotate, "alice", `{"grace":"1h"}`, 403, ""},
		{"unknown token", "POST", "/users/alice/tokens/tok_0000/rotate", "root", `{}`, 404, ""},
	})
	e.clock.Advance(24 * time.Hour) // the new expiry must start from now, not from the old creation
	e.root = e.login(rootName, rootPassword)

	var rotated newTokenResponse
	e.must(http.StatusCreated, "POST", rotate, e.root, `{"grace":"1h"}`).decode(t, &rotated)
	if rotated.Name != "deploy" || rotated.ID == old.ID || rotated.Secret == oldSecret ||
		!rotated.ExpiresAt.Equal(e.clock.Now().Add(DefaultPermanentTokenLifetime)) {
		t.Fatalf("rotated = %+v; want a new deploy token expiring 365 days from now", rotated.Token)
	}
	e.must(http.StatusOK, "GET", "/me", rotated.Secret, "")
	e.must(http.StatusOK, "GET", "/me", oldSecret, "") // inside the grace period
	e.must(http.StatusConflict, "POST", rotate, e.root, `{}`)
	e.clock.Advance(time.Hour)
	e.must(http.StatusUnauthorized, "GET", "/me", oldSecret, "")
	e.must(http.StatusOK, "GET", "/me", rotated.Secret, "")
	if a, ok := findAudit(e.audit(), storage.ActionTokenRotate, old.ID); !ok || a.Actor != "root" {
		t.Errorf("token_rotate audit = %+v; want actor root", a)
	}

	t.Run("without a body the old token dies at once", func(t *testing.T) {
		var again newTokenResponse
		e.must(http.StatusCreated, "POST", "/users/alice/tokens/"+rotated.ID+"/rotate", e.root, "").decode(t, &again)
		e.must(http.StatusUnauthorized, "GET", "/me", rotated.Secret, "")
		e.must(http.StatusOK, "GET", "/me", again.Secret, "")
	})
}

func TestListTokensFilter(t *testing.T) {
	e := newEnv(t)
	e.addUser("alice") // also a temporary token expiring in 12h
	day := 24 * time.Hour
	_, in10 := e.addToken("alice", "in10", testStart.Add(10*day))
	_, in40 := e.addToken("alice", "in40", testStart.Add(40*day))
	_, in300 := e.addToken("alice", "in300", testStart.Add(300*day))

	ids := func(query string) []string {
		var toks []storage.Token
		e.must(http.StatusOK, "GET", "/tokens"+query, e.root, "").decode(t, &toks)
		var out []string
		for _, tk := range toks {
			if tk.Kind == storage.Permanent {
				out = append(out, tk.Name)
			} else {
				out = append(out, "temporary")
			}
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"?kind=permanent", []string{in10.Name, in300.Name, in40.Name}},
		{"?expiring_within=30d&kind=permanent", []string{in10.Name}},
		{"?expiring_within=1000h&kind=permanent", []string{in10.Name, in40.Name}},
		{"?expiring_within=1d", []string{"temporary", "temporary"}},
		{"?kind=temporary", []string{"temporary", "temporary"}},
	} {
		if got := ids(c.query); !slices.Equal(got, c.want) {
			t.Errorf("GET /tokens%s = %v; want %v", c.query, got, c.want)
		}
	}
	e.clock.Advance(11 * day) // in10 expired: still listed, as expired
	e.root = e.login(rootName, rootPassword)
	var toks []storage.Token
	e.must(http.StatusOK, "GET", "/tokens?expiring_within=0&kind=permanent", e.root, "").decode(t, &toks)
	if len(toks) != 1 || toks[0].ID != in10.ID || toks[0].Status != storage.StatusExpired {
		t.Errorf("expired tokens = %+v; want in10, expired", toks)
	}

	e.run(t, map[string]string{"root": e.root}, []call{
		{"bad duration", "GET", "/tokens?expiring_within=month", "root", "", 400, "expiring_within"},
		{"negative duration", "GET", "/tokens?expiring_within=-1d", "root", "", 400, "negative"},
		{"bad kind", "GET", "/tokens?kind=forever", "root", "", 400, "permanent or temporary"},
	})
}
