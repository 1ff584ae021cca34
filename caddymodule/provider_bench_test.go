package caddymodule_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/caddymodule"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// headerOnlyWriter is the least a provider can write to: a header map.
type headerOnlyWriter struct{ h http.Header }

func (w *headerOnlyWriter) Header() http.Header         { return w.h }
func (w *headerOnlyWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerOnlyWriter) WriteHeader(int)             {}

// BenchmarkProvider measures Authenticate over a real Badger store, plus
// the placeholders caddyauth sets from its result (setAuthUserPlaceholders
// below), with the replacer a Caddy server gives a request, fresh for each
// iteration, in the request context: the
// hot path (a valid token, with and without removing the header) and the
// paths an attacker can drive (garbage, a well-formed unknown token).
//
//	go test -run '^$' -bench BenchmarkProvider -benchmem ./caddymodule/
func BenchmarkProvider(b *testing.B) {
	db, err := badgerstore.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	store, err := storage.Open(context.Background(), db, storage.Options{PasswordCost: bcrypt.MinCost})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
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

	for _, bc := range []struct {
		name   string
		header string
		keep   bool
		wantOK bool
	}{
		{"valid", "Bearer " + sec, false, true},
		{"valid_keep_authorization", "Bearer " + sec, true, true},
		{"garbage", "Bearer caddy_pat_this-is-not-a-token", false, false},
		{"unknown", "Bearer " + secret.New(storage.Permanent), false, false},
		{"missing", "", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := caddymodule.NewTestProvider(store.Verifier(), false, bc.keep)
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			repl := caddyhttp.NewTestReplacer(r) // and puts it in r's context
			fresh := *repl
			w := &headerOnlyWriter{h: http.Header{}}
			value := []string{bc.header}
			b.ReportAllocs()
			for b.Loop() {
				if bc.header != "" {
					// Put back what a successful call removed.
					r.Header["Authorization"] = value
				}
				*repl = fresh
				user, ok, _ := p.Authenticate(w, r)
				if ok != bc.wantOK {
					b.Fatalf("authenticated = %v, want %v", ok, bc.wantOK)
				}
				if ok {
					setAuthUserPlaceholders(repl, "http.auth.user", user)
				}
			}
		})
	}
}

// setAuthUserPlaceholders is what caddyauth (v2.11.9, caddyauth.go) does
// with a provider's user after it accepts a request.
func setAuthUserPlaceholders(repl *caddy.Replacer, namespace string, user caddyauth.User) {
	repl.Set(namespace+".id", user.ID)
	for k, v := range user.Metadata {
		repl.Set(namespace+"."+k, v)
	}
}
