package caddymodule_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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
	if _, err := store.CreateUser(ctx, storage.NewUser{Username: "ci", Email: "ci@example.com", Password: "a long enough password"}); err != nil {
		b.Fatal(err)
	}
	sec, _, err := store.CreateToken(ctx, storage.NewToken{
		User: "ci", Name: "deploy", Kind: storage.Permanent, ExpiresAt: time.Now().Add(24 * time.Hour), CreatedBy: "admin",
	})
	if err != nil {
		b.Fatal(err)
	}
	valid := "Bearer " + sec
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
		{"forbidden_403", caddymodule.AuthHandler{RequireAdmin: true}, []string{valid}, 403, false},
		{"garbage_401", caddymodule.AuthHandler{}, []string{"Bearer caddy_pat_this-is-not-a-token"}, 401, false},
		{"bad_checksum_401", caddymodule.AuthHandler{}, []string{"Bearer " + sec[:len(sec)-1] + flip(sec[len(sec)-1])}, 401, false},
		{"unknown_401", caddymodule.AuthHandler{}, []string{"Bearer " + secret.New(storage.Permanent)}, 401, false},
		{"missing_401", caddymodule.AuthHandler{}, nil, 401, false},
		{"two_headers_401", caddymodule.AuthHandler{}, []string{valid, valid}, 401, false},
		{"garbage_use_handle_errors", caddymodule.AuthHandler{UseHandleErrors: true}, []string{"Bearer caddy_pat_this-is-not-a-token"}, 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h, err := caddymodule.NewTestHandler(store.Verifier(), bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			repl := caddyhttp.NewTestReplacer(r) // and puts it in r's context
			fresh := *repl
			w := &statusWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				if bc.header != nil {
					// Put back what a successful call removed.
					r.Header["Authorization"] = bc.header
				}
				w.status = 0
				*repl = fresh
				err := h.ServeHTTP(w, r, next)
				if w.status != bc.wantStatus || (err != nil) != bc.wantErr {
					b.Fatalf("status %d, error %v; want %d, error %v", w.status, err, bc.wantStatus, bc.wantErr)
				}
			}
		})
	}
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
