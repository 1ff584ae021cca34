package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
)

// FuzzAuthorizationHeader sends arbitrary Authorization values to the
// gateway's provider over a real store holding one valid token. Whatever
// the bytes, nothing panics, and the only values that pass are the valid
// token after a case-insensitive "Bearer " (with surrounding blanks):
// no other value, however close, fails open.
func FuzzAuthorizationHeader(f *testing.F) {
	clock := storage.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	store, err := badgerstore.OpenStore(f.TempDir(), storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
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
	p, err := NewTestProvider(store, false, false)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"Bearer " + valid, "bearer " + valid, "BEARER\t" + valid + " ", "Bearer " + valid + "x", "Bearer " + valid[:len(valid)-1],
		"Bearer", "Bearer ", "Basic YTpi", valid, "Bearer " + strings.ToUpper(valid), "Bearer  " + valid + "\x00", "",
		"Bearer " + storage.NewSecret(storage.Permanent), "Bearer " + storage.NewSecret(storage.Temporary),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", header)
		w := httptest.NewRecorder()
		user, ok, err := p.Authenticate(w, r)
		if err != nil {
			t.Fatalf("Authenticate(%q) returned an error: %v", header, err)
		}
		want := len(header) > 7 && strings.EqualFold(header[:7], "Bearer ") && strings.Trim(header[7:], " \t") == valid
		if ok != want {
			t.Fatalf("Authenticate(%q) = %v, want %v", header, ok, want)
		}
		if ok && (user.ID != "alice" || r.Header.Get("Authorization") != "") {
			t.Fatalf("Authenticate(%q) passed as %q, Authorization left %q", header, user.ID, r.Header.Get("Authorization"))
		}
		if !ok && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), `Bearer realm="api_tokens"`) {
			t.Fatalf("Authenticate(%q) refused without a Bearer challenge", header)
		}
	})
}
