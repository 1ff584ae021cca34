package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/caddymodule"
	"github.com/apitokens/caddy-api-tokens/internal/apicontract"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// adminEndpoint is the admin endpoint of this test binary's in-process
// Caddy; every config a test loads keeps it. Its port, like every port a
// test config listens on, is one the kernel had free a moment before,
// never a fixed one: Caddy listens with SO_REUSEPORT, so two test binaries
// on one machine (two checkouts, or `go test` next to `go test -race`)
// would both bind a fixed port without an error and answer each other's
// requests and config loads.
var adminEndpoint = func() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}()

// globalOptions starts every test config: this binary's admin endpoint,
// plain HTTP on loopback only, nothing written outside the test's dirs.
var globalOptions = `
	admin ` + adminEndpoint + `
	auto_https off
	persist_config off
	default_bind 127.0.0.1
`

// emptyConfig is what runs between tests: the admin endpoint alone.
var emptyConfig = `{"admin":{"listen":"` + adminEndpoint + `","config":{"persist":false}}}`

// freePort returns a loopback port for a test's site; each test takes its
// own, so no test can reach a server another test left shutting down.
func freePort(t *testing.T) int {
	t.Helper()
	return testtools.FreePort(t)
}

// echoSite is an upstream that answers with what it received, one
// "name=value" per line, so a test sees what reached the backend.
func echoSite(port int) string {
	return fmt.Sprintf("http://localhost:%d {\n\trespond `"+
		"user={http.request.header.X-Auth-User}\n"+
		"token_id={http.request.header.X-Token-Id}\n"+
		"token_kind={http.request.header.X-Token-Kind}\n"+
		"admin={http.request.header.X-Admin}\n"+
		"authorization={http.request.header.Authorization}\n"+
		"` 200\n}\n", port)
}

// proxyWithPlaceholders forwards to the echo upstream, passing the
// identity placeholders the provider sets.
func proxyWithPlaceholders(upstreamPort int) string {
	return fmt.Sprintf(`reverse_proxy localhost:%d {
			header_up X-Auth-User {http.auth.user.id}
			header_up X-Token-Id {http.auth.user.token_id}
			header_up X-Token-Kind {http.auth.user.token_kind}
			header_up X-Admin {http.auth.user.admin}
		}`, upstreamPort)
}

// useFakeClock makes the store that `storage test { path <dir> }` opens
// run on a fake clock, so expiry is tested without waiting, and returns
// it. Call it before loading the config. (A store opened by `storage test`
// always hashes passwords at the cheapest cost.)
func useFakeClock(dir string) *testtools.FakeClock {
	clock := testtools.NewFakeClock(time.Now().UTC().Truncate(time.Second))
	caddymodule.UseTestClock(dir, clock)
	return clock
}

var (
	startOnce sync.Once
	startErr  error
)

// loadCaddy starts (once per test binary) Caddy in this process and loads
// caddyfile through its admin endpoint. At the end of the test the empty
// config is loaded, which closes the test's database before t.TempDir is
// removed.
func loadCaddy(t *testing.T, caddyfile string) {
	t.Helper()
	loadConfig(t, "text/caddyfile", caddyfile)
}

// loadConfig is loadCaddy for a config of any type Caddy's /load takes.
func loadConfig(t *testing.T, contentType, config string) {
	t.Helper()
	startOnce.Do(func() { startErr = caddy.Load([]byte(emptyConfig), true) })
	if startErr != nil {
		t.Fatalf("starting Caddy: %v", startErr)
	}
	if status, body := postConfig(t, contentType, config); status != http.StatusOK {
		t.Fatalf("loading the test config: %d %s", status, body)
	}
	t.Cleanup(func() {
		if status, body := postConfig(t, "application/json", emptyConfig); status != http.StatusOK {
			t.Errorf("unloading the test config: %d %s", status, body)
		}
	})
}

// postConfig replaces Caddy's running config through its admin API, the
// way `caddy reload` does, and returns once the config it replaced no
// longer listens (whether the load succeeded or not: even a refused config
// restarts the admin endpoint). Caddy answers /load while the old servers'
// shutdowns are still starting, and a connection that reaches an old
// server then is dropped unanswered (see testtools.WaitSoleListeners and
// README.md, Operations); after the wait, the next request can only reach
// the config in force.
func postConfig(t *testing.T, contentType, config string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+adminEndpoint+"/load", strings.NewReader(config))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := loadClient.Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	testtools.WaitSoleListeners(t, os.Getpid())
	return resp.StatusCode, string(body)
}

// httpClient opens a new connection per request, so no request goes out
// on a connection to a server that a config load has replaced.
var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// adminContract checks every exchange with the admin API, mounted at
// /api-tokens in every test config, against its OpenAPI document; other
// URLs (the gateway, Caddy's admin endpoint) pass unchecked. Caddy adds its
// Server header; the web page under /ui is not part of the API.
func adminContract(t *testing.T) *apicontract.Contract {
	t.Helper()
	return apicontract.MustNew(t, admin.OpenAPI(), apicontract.Options{
		Prefix:                "/api-tokens",
		IgnorePaths:           []string{"/ui"},
		IgnoreResponseHeaders: []string{"Server"},
	})
}

// loadClient is httpClient with more time: a load opens or closes a
// Badger database, which took 13 s once on a starved 2-core machine.
var loadClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// response is what a test checks of an HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// send makes one request; token, if not empty, goes in the Authorization
// header as is (so tests can send odd schemes). Requests to the admin API
// and their answers are checked against its OpenAPI document.
func send(t *testing.T, method, url, authorization string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := adminContract(t).Client(t, httpClient).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// sendAuthorizations makes a GET request with one Authorization header per
// value, each on its own header line.
func sendAuthorizations(t *testing.T, url string, values ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header["Authorization"] = values
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// api calls the admin REST API at base with a bearer token, checks the
// status and decodes the JSON answer into out (when not nil).
func api(t *testing.T, base, token, method, path string, body any, wantStatus int, out any) {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	resp := send(t, method, base+path, auth, body)
	if resp.status != wantStatus {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, resp.status, wantStatus, resp.body)
	}
	if out != nil {
		if err := json.Unmarshal(resp.body, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, resp.body, err)
		}
	}
}

// login returns a temporary token for the user.
func login(t *testing.T, base, username, password string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
		Kind  string `json:"kind"`
	}
	api(t, base, "", http.MethodPost, "/login", map[string]string{"username": username, "password": password}, http.StatusCreated, &out)
	if out.Token == "" || out.Kind != "temporary" {
		t.Fatalf("login as %s: got token %q of kind %q", username, out.Token, out.Kind)
	}
	return out.Token
}

// newToken is the answer to creating or rotating a permanent token.
type newToken struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	ExpiresAt time.Time `json:"expires_at"`
}

// createUserWithToken creates a non-admin user and a permanent token for it.
func createUserWithToken(t *testing.T, base, adminToken, username, tokenName string) newToken {
	t.Helper()
	api(t, base, adminToken, http.MethodPost, "/users", map[string]any{
		"username": username, "email": username + "@example.com", "password": "password-of-" + username,
	}, http.StatusCreated, nil)
	var tok newToken
	api(t, base, adminToken, http.MethodPost, "/users/"+username+"/tokens", map[string]string{"name": tokenName}, http.StatusCreated, &tok)
	if tok.Token == "" || tok.Kind != "permanent" {
		t.Fatalf("creating token %s for %s: got %+v", tokenName, username, tok)
	}
	return tok
}

// echoed parses the echo upstream's answer.
func echoed(t *testing.T, resp response) map[string]string {
	t.Helper()
	if resp.status != http.StatusOK {
		t.Fatalf("gateway answered %d, want 200; body: %s", resp.status, resp.body)
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(resp.body)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	return got
}

// wantUnauthorized checks a 401 and its RFC 6750 challenge.
func wantUnauthorized(t *testing.T, resp response, tokenGiven bool) {
	t.Helper()
	if resp.status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401; body: %s", resp.status, resp.body)
	}
	want := `Bearer realm="api_tokens"`
	if tokenGiven {
		want += `, error="invalid_token"`
	}
	if got := resp.header.Get("WWW-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate = %q, want %q", got, want)
	}
}

// wantJSONError checks that a refusal's body is the gateway's JSON error,
// {"error": "..."}, with a message containing want.
func wantJSONError(t *testing.T, resp response, want string) {
	t.Helper()
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(resp.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || !strings.Contains(body.Error, want) {
		t.Errorf("body %q: want {\"error\": \"...%s...\"} (%v)", resp.body, want, err)
	}
}

// authCounts reads api_tokens_auth_requests_total from Caddy's /metrics,
// by result.
func authCounts(t *testing.T) map[string]float64 {
	t.Helper()
	resp := send(t, http.MethodGet, "http://"+adminEndpoint+"/metrics", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.status, resp.body)
	}
	counts := map[string]float64{}
	const prefix = `api_tokens_auth_requests_total{result="`
	for line := range strings.SplitSeq(string(resp.body), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		result, value, _ := strings.Cut(rest, `"} `)
		var v float64
		if _, err := fmt.Sscan(value, &v); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		counts[result] = v
	}
	return counts
}

func TestMain(m *testing.M) {
	code := m.Run()
	testtools.FinishPostgres()
	os.Exit(code)
}
