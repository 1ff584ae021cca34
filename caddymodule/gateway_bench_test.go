package caddymodule_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/caddymodule"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// BenchmarkGateway measures the api_token_auth handler's ServeHTTP over a
// real store, Badger and PostgreSQL, with Caddy's replacer in the request
// context as in a server and a next handler that does nothing: the hot
// path (a valid token, with and without removing the header) and every
// refusal an outsider can drive, answered directly, plus one refusal with
// use_handle_errors to show what opting in costs. On PostgreSQL the path
// is the same (verification never leaves the process); an unknown
// well-formed token costs one catch-up with the change feed, then is
// remembered as missing.
//
//	go test -run '^$' -bench BenchmarkGateway -benchmem ./caddymodule/
//
// Each iteration starts from the replacer a Caddy server gives a request
// (caddyhttp.NewTestReplacer), restored by copying, so the placeholders a
// valid token adds are counted as they are in a server.
func BenchmarkGateway(b *testing.B) {
	for _, backend := range []string{"badger", "postgres"} {
		b.Run(backend, func(b *testing.B) { benchmarkGateway(b, openBenchStore(b, backend)) })
	}
}

// openBenchStore opens a store on a new database of the backend.
func openBenchStore(b *testing.B, backend string) *storage.Store {
	opts := storage.Options{PasswordCost: bcrypt.MinCost}
	var store *storage.Store
	var db kv.Backend
	var err error
	if backend == "postgres" {
		db, err = pgstore.Open(context.Background(), testtools.PostgresDatabase(b), pgstore.Options{})
	} else {
		db, err = badgerstore.Open(b.TempDir(), nil)
	}
	if err != nil {
		b.Fatal(err)
	}
	store, err = storage.Open(context.Background(), db, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	return store
}

func benchmarkGateway(b *testing.B, store *storage.Store) {
	ctx := context.Background()
	catalogue := []string{"deploy", "reports:read", "reports:write"}
	store.SetScopes([]storage.Scope{{Name: "deploy"}, {Name: "reports:read"}, {Name: "reports:write"}})
	if _, err := store.CreateUser(ctx, storage.NewUser{Username: "ci", Email: "ci@example.com", Password: "a long enough password", Scopes: catalogue}); err != nil {
		b.Fatal(err)
	}
	newToken := func(name string, scopes, cidrs []string) string {
		sec, _, err := store.CreateToken(ctx, storage.NewToken{
			User: "ci", Name: name, Kind: storage.Permanent, ExpiresAt: time.Now().Add(24 * time.Hour), CreatedBy: "admin",
			Scopes: scopes, AllowedCIDRs: cidrs,
		})
		if err != nil {
			b.Fatal(err)
		}
		return sec
	}
	sec := newToken("deploy", []string{"deploy", "reports:read"}, nil)
	valid := "Bearer " + sec
	fromOffice := "Bearer " + newToken("office", []string{"deploy"}, []string{"10.0.0.0/8"})
	fromElsewhere := "Bearer " + newToken("elsewhere", []string{"deploy"}, []string{"192.0.2.0/24"})
	deploy := caddymodule.RouteScopes{RequireScope: []string{"deploy"}}
	write := caddymodule.RouteScopes{RequireScope: []string{"reports:write"}}
	writeShadow := caddymodule.RouteScopes{RequireScope: []string{"reports:write"}, ScopeMode: "shadow"}
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

	for _, bc := range []struct {
		name       string
		cfg        caddymodule.AuthHandler
		header     []string
		wantStatus int // 0: passed on to next
		wantErr    bool
	}{
		{"valid", caddymodule.AuthHandler{}, []string{valid}, 0, false},
		{"valid_keep_authorization", caddymodule.AuthHandler{KeepAuthorization: true}, []string{valid}, 0, false},
		{"valid_scoped_route", caddymodule.AuthHandler{RouteScopes: deploy}, []string{valid}, 0, false},
		{"valid_allowed_network", caddymodule.AuthHandler{RouteScopes: deploy}, []string{fromOffice}, 0, false},
		{"shadow_missing_scope_passes", caddymodule.AuthHandler{RouteScopes: writeShadow}, []string{valid}, 0, false},
		{"forbidden_403", caddymodule.AuthHandler{RequireAdmin: true}, []string{valid}, 403, false},
		{"insufficient_scope_403", caddymodule.AuthHandler{RouteScopes: write}, []string{valid}, 403, false},
		{"network_not_allowed_403", caddymodule.AuthHandler{}, []string{fromElsewhere}, 403, false},
		{"garbage_401", caddymodule.AuthHandler{}, []string{"Bearer caddy_pat_this-is-not-a-token"}, 401, false},
		{"bad_checksum_401", caddymodule.AuthHandler{}, []string{"Bearer " + sec[:len(sec)-1] + flip(sec[len(sec)-1])}, 401, false},
		{"unknown_401", caddymodule.AuthHandler{}, []string{"Bearer " + secret.New(storage.Permanent)}, 401, false},
		{"missing_401", caddymodule.AuthHandler{}, nil, 401, false},
		{"two_headers_401", caddymodule.AuthHandler{}, []string{valid, valid}, 401, false},
		{"garbage_use_handle_errors", caddymodule.AuthHandler{UseHandleErrors: true}, []string{"Bearer caddy_pat_this-is-not-a-token"}, 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, err := caddymodule.NewTestHandler(store.Verifier(), bc.cfg, catalogue...)
			if err != nil {
				b.Fatal(err)
			}
			r := serverRequest()
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			fresh := *repl
			vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
			w := &statusWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				if bc.header != nil {
					// Put back what a successful call removed.
					r.Header["Authorization"] = bc.header
				}
				w.status = 0
				*repl = fresh
				delete(vars, "api_tokens.checked")
				err := h.ServeHTTP(w, r, next)
				if w.status != bc.wantStatus || (err != nil) != bc.wantErr {
					b.Fatalf("status %d, error %v; want %d, error %v", w.status, err, bc.wantStatus, bc.wantErr)
				}
			}
		})
	}
}

// serverRequest is a request as a Caddy server hands it to its handlers:
// with a replacer and the request variables, among them the client
// address (10.1.2.3), in its context.
func serverRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	vars := map[string]any{caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "10.1.2.3"}
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
	caddyhttp.NewTestReplacer(r) // and puts it in r's context
	return r
}

// flip returns a different base62 character than c.
func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

// statusWriter is the least a handler can write to: a header map and the
// status.
type statusWriter struct {
	h      http.Header
	status int
}

func (w *statusWriter) Header() http.Header         { return w.h }
func (w *statusWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *statusWriter) WriteHeader(status int)      { w.status = status }
