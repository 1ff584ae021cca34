package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// FuzzAuthorizationHeader sends arbitrary Authorization values, one or
// two of them, to the gateway's handler (api_token_auth, answering
// directly and with use_handle_errors) and to the provider, over a real
// store holding one valid token. Whatever the bytes, nothing panics, and
// the only requests that pass carry exactly one header with the valid
// token after a case-insensitive "Bearer " (with surrounding blanks): no
// other value, however close, and no second header, fails open. Every
// refusal carries the Bearer challenge; the handler's is a 401 (a second
// header always with invalid_token) with a JSON error body.
func FuzzAuthorizationHeader(f *testing.F) {
	clock := testtools.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	db, err := badgerstore.Open(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	store, err := storage.Open(context.Background(), db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	ctx := context.Background()
	if _, err := store.CreateUser(ctx, storage.NewUser{Username: "alice", Password: "pw-alice-1"}); err != nil {
		f.Fatal(err)
	}
	valid, _, err := store.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci", Kind: storage.Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	p, err := NewTestProvider(store.Verifier(), false, false)
	if err != nil {
		f.Fatal(err)
	}
	direct, err := NewTestHandler(store.Verifier(), AuthHandler{})
	if err != nil {
		f.Fatal(err)
	}
	viaErrors, err := NewTestHandler(store.Verifier(), AuthHandler{UseHandleErrors: true})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"Bearer " + valid, "bearer " + valid, "BEARER\t" + valid + " ", "Bearer " + valid + "x", "Bearer " + valid[:len(valid)-1],
		"Bearer", "Bearer ", "Basic YTpi", valid, "Bearer " + strings.ToUpper(valid), "Bearer  " + valid + "\x00", "",
		"Bearer " + secret.New(storage.Permanent), "Bearer " + secret.New(storage.Temporary),
	} {
		f.Add(seed, "", false)
		f.Add(seed, "Bearer "+valid, true)
	}
	f.Fuzz(func(t *testing.T, header, second string, two bool) {
		values := []string{header}
		if two {
			values = append(values, second)
		}
		want := !two && len(header) > 7 && strings.EqualFold(header[:7], "Bearer ") && strings.Trim(header[7:], " \t") == valid
		wantChallenge := `Bearer realm="api_tokens"`
		if two {
			wantChallenge += `, error="invalid_token"`
		}
		request := func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Authorization"] = append([]string(nil), values...)
			return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		}

		// The provider.
		r := request()
		w := httptest.NewRecorder()
		user, ok, err := p.Authenticate(w, r)
		if err != nil {
			t.Fatalf("Authenticate(%q) returned an error: %v", values, err)
		}
		if ok != want {
			t.Fatalf("Authenticate(%q) = %v, want %v", values, ok, want)
		}
		if ok && (user.ID != "alice" || r.Header.Get("Authorization") != "") {
			t.Fatalf("Authenticate(%q) passed as %q, Authorization left %q", values, user.ID, r.Header.Get("Authorization"))
		}
		if got := w.Header().Get("WWW-Authenticate"); !ok && !strings.HasPrefix(got, wantChallenge) {
			t.Fatalf("Authenticate(%q) refused with challenge %q, want %q", values, got, wantChallenge)
		}

		// The handler, answering itself.
		r = request()
		w = httptest.NewRecorder()
		var passedAs string
		next := caddyhttp.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) error {
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			passedAs, _ = repl.GetString("http.auth.user.id")
			if r.Header.Get("Authorization") != "" {
				t.Errorf("%q: the next handler sees the Authorization header", values)
			}
			return nil
		})
		if err := direct.ServeHTTP(w, r, next); err != nil {
			t.Fatalf("ServeHTTP(%q) returned an error: %v", values, err)
		}
		if want != (passedAs == "alice") {
			t.Fatalf("ServeHTTP(%q) passed as %q, want passed: %v", values, passedAs, want)
		}
		if !want {
			var body struct{ Error string }
			if w.Code != http.StatusUnauthorized || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), wantChallenge) ||
				json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error == "" {
				t.Fatalf("ServeHTTP(%q) refused with %d, challenge %q, body %q", values, w.Code, w.Header().Get("WWW-Authenticate"), w.Body)
			}
		}

		// The handler, refusing with a Caddy error.
		r = request()
		w = httptest.NewRecorder()
		passedAs = ""
		err = viaErrors.ServeHTTP(w, r, next)
		if want != (passedAs == "alice") || want != (err == nil) {
			t.Fatalf("use_handle_errors: ServeHTTP(%q) passed as %q, error %v; want passed: %v", values, passedAs, err, want)
		}
		if !want {
			var he caddyhttp.HandlerError
			if herr, isHE := err.(caddyhttp.HandlerError); isHE {
				he = herr
			}
			if he.StatusCode != http.StatusUnauthorized || w.Code != http.StatusOK || w.Body.Len() != 0 ||
				!strings.HasPrefix(w.Header().Get("WWW-Authenticate"), wantChallenge) {
				t.Fatalf("use_handle_errors: ServeHTTP(%q) refused with error %v (status %d), wrote %d %q, challenge %q",
					values, err, he.StatusCode, w.Code, w.Body, w.Header().Get("WWW-Authenticate"))
			}
		}
	})
}
