package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/apicontract"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
)

// testStart is the fake clock's start: any fixed instant will do.
var testStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	rootName     = "root"
	rootPassword = "root-password-1"
	userPassword = "alice-password-1"
	// ipHeader lets a test pretend to come from another client address.
	ipHeader = "X-Test-Client-Ip"
)

// env is a real admin API over a real Badger store on a fake clock.
type env struct {
	t        testing.TB
	store    *storage.Store
	clock    *testtools.FakeClock
	handler  http.Handler
	srv      *httptest.Server
	client   *http.Client // checks every exchange against the OpenAPI document
	settings atomic.Int32 // the store's OnSettingsChange calls
	faults   []storage.Fault
	root     string // an admin's session token
}

func newEnv(t testing.TB, tweak ...func(*Config)) *env {
	t.Helper()
	clock := testtools.NewFakeClock(testStart)
	db, err := badgerstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	store, err := storage.Open(context.Background(), db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e := &env{t: t, store: store, clock: clock}
	store.OnSettingsChange(func() { e.settings.Add(1) })
	cfg := Config{
		Store:  store,
		Clock:  clock,
		Faults: func() []storage.Fault { return e.faults },
		ClientIP: func(r *http.Request) string {
			if ip := r.Header.Get(ipHeader); ip != "" {
				return ip
			}
			return remoteHost(r)
		},
	}
	for _, f := range tweak {
		f(&cfg)
	}
	e.handler = New(cfg)
	e.srv = httptest.NewServer(e.handler)
	t.Cleanup(e.srv.Close)
	e.client = contract(t).Client(t, e.srv.Client())

	created, err := store.EnsureAdmin(context.Background(), storage.NewUser{Username: rootName, Email: "root@example.com", Password: rootPassword, Admin: true})
	if err != nil || !created {
		t.Fatalf("EnsureAdmin = %v, %v", created, err)
	}
	e.root = e.login(rootName, rootPassword)
	return e
}

// contract checks exchanges with the handler against openapi.json. The web
// page under /ui is not part of the API; the test header that fakes the
// client address is not either.
func contract(t testing.TB) *apicontract.Contract {
	t.Helper()
	return apicontract.MustNew(t, OpenAPI(), apicontract.Options{
		IgnorePaths:          []string{"/ui"},
		IgnoreRequestHeaders: []string{ipHeader},
	})
}

// resp is an answer as a client sees it.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// errMsg returns the {"error": ...} message, failing if the body is not one.
func (r resp) errMsg(t testing.TB) string {
	t.Helper()
	var b struct{ Error string }
	if err := json.Unmarshal(r.body, &b); err != nil || b.Error == "" {
		t.Fatalf("status %d body %q is not an error object", r.status, r.body)
	}
	return b.Error
}

// decode unmarshals the body into v.
func (r resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// do sends a request with a bearer token (if any) and a raw body (if any).
func (e *env) do(method, path, token, body string, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, method, path, token, body string) resp {
	e.t.Helper()
	r := e.do(method, path, token, body)
	if r.status != want {
		e.t.Fatalf("%s %s = %d %s; want %d", method, path, r.status, r.body, want)
	}
	return r
}

func (e *env) login(username, password string) string {
	e.t.Helper()
	var out loginResponse
	e.must(http.StatusCreated, "POST", "/login", "", jsonBody(map[string]string{"username": username, "password": password})).decode(e.t, &out)
	return out.Token
}

// addUser creates a non-admin user through the API and returns a session token.
func (e *env) addUser(name string) string {
	e.t.Helper()
	e.must(http.StatusCreated, "POST", "/users", e.root, jsonBody(map[string]any{
		"username": name, "email": name + "@example.com", "password": userPassword,
	}))
	return e.login(name, userPassword)
}

// addToken creates a permanent token for user and returns its secret and metadata.
func (e *env) addToken(user, name string, expiresAt ...time.Time) (string, storage.Token) {
	e.t.Helper()
	body := map[string]string{"name": name}
	if len(expiresAt) > 0 {
		body["expires_at"] = expiresAt[0].Format(time.RFC3339)
	}
	var out newTokenResponse
	e.must(http.StatusCreated, "POST", "/users/"+user+"/tokens", e.root, jsonBody(body)).decode(e.t, &out)
	return out.Secret, out.Token
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// audit returns the newest audit entries.
func (e *env) audit() []storage.AuditEntry {
	e.t.Helper()
	var out []storage.AuditEntry
	e.must(http.StatusOK, "GET", "/audit?limit=1000", e.root, "").decode(e.t, &out)
	return out
}

// findAudit returns the newest entry with this action and target.
func findAudit(entries []storage.AuditEntry, action, target string) (storage.AuditEntry, bool) {
	for _, a := range entries {
		if a.Action == action && a.Target == target {
			return a, true
		}
	}
	return storage.AuditEntry{}, false
}

// snapshot is everything an admin can list, to prove a request changed
// nothing. Last-used times are left out: a refused request made with a valid
// token still uses that token.
func (e *env) snapshot() string {
	e.t.Helper()
	var toks []storage.Token
	e.must(http.StatusOK, "GET", "/tokens", e.root, "").decode(e.t, &toks)
	for i := range toks {
		toks[i].LastUsedAt = nil
	}
	var b bytes.Buffer
	b.WriteString(jsonBody(toks))
	for _, p := range []string{"/users", "/settings", "/audit?limit=1000"} {
		b.Write(e.must(http.StatusOK, "GET", p, e.root, "").body)
	}
	return b.String()
}
