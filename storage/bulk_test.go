package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestCreateTokensIsAllOrNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		mustCreateUser(t, s, "ci", false)
		ctx := context.Background()
		exp := t0.Add(30 * 24 * time.Hour)

		batch := make([]NewToken, 50)
		for i := range batch {
			batch[i] = NewToken{User: "ci", Name: fmt.Sprintf("deploy-%d", i), Kind: Permanent, ExpiresAt: exp}
		}
		secrets, metas, err := s.CreateTokens(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, secret := range secrets {
			id, r := s.Verify(secret)
			if r != verifier.ResultOK || id.TokenID != metas[i].ID {
				t.Fatalf("token %d: Verify = %v, %q; want ok, %q", i, r, id.TokenID, metas[i].ID)
			}
		}

		// A batch with one duplicate name writes nothing at all.
		bad := []NewToken{
			{User: "ci", Name: "fresh", Kind: Permanent, ExpiresAt: exp},
			{User: "ci", Name: "deploy-3", Kind: Permanent, ExpiresAt: exp},
		}
		if _, _, err := s.CreateTokens(ctx, bad); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate in batch: err = %v, want ErrConflict", err)
		}
		list, err := s.ListUserTokens(ctx, "ci")
		if err != nil || len(list) != 50 {
			t.Fatalf("after a failed batch the user has %d tokens (%v), want 50", len(list), err)
		}
		if got := s.Alerting().CountTokens()[Permanent]; got != 50 {
			t.Fatalf("CountTokens = %d, want 50", got)
		}
		// Every owner in a batch is checked, not only the first.
		mixed := []NewToken{
			{User: "ci", Name: "fresh", Kind: Permanent, ExpiresAt: exp},
			{User: "ci", Name: "fresh-2", Kind: Permanent, ExpiresAt: exp},
			{User: "ghost", Name: "fresh", Kind: Permanent, ExpiresAt: exp},
		}
		if _, _, err := s.CreateTokens(ctx, mixed); !errors.Is(err, ErrNotFound) {
			t.Fatalf("batch with a missing owner: err = %v, want ErrNotFound", err)
		}
		if got := s.Alerting().CountTokens()[Permanent]; got != 50 {
			t.Fatalf("after a batch with a missing owner CountTokens = %d, want 50", got)
		}
		if _, _, err := s.CreateTokens(ctx, make([]NewToken, MaxBatch+1)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("oversized batch: err = %v, want ErrInvalid", err)
		}
	})
}

// A temporary token without a name is a login token, in a batch as by
// CreateToken: it is named "login" rather than refused.
func TestCreateTokensNamesUnnamedTemporaryTokensLogin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "ci", false)
		ctx := context.Background()
		batch := []NewToken{
			{User: "ci", Kind: Temporary, ExpiresAt: clock.Now().Add(time.Hour)},
			{User: "ci", Name: "session", Kind: Temporary, ExpiresAt: clock.Now().Add(time.Hour)},
		}
		secrets, metas, err := s.CreateTokens(ctx, batch)
		if err != nil {
			t.Fatalf("CreateTokens with an unnamed temporary token: %v", err)
		}
		if metas[0].Name != "login" || metas[1].Name != "session" {
			t.Fatalf("names = %q, %q; want login, session", metas[0].Name, metas[1].Name)
		}
		if got, err := s.GetToken(ctx, metas[0].ID); err != nil || got.Name != "login" {
			t.Fatalf("stored token: %+v, %v; want name login", got, err)
		}
		if _, r := s.Verify(secrets[0]); r != verifier.ResultOK {
			t.Fatalf("Verify = %v", r)
		}
		// A permanent token still needs a name.
		_, _, err = s.CreateTokens(ctx, []NewToken{{User: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)}})
		wantErr(t, err, ErrInvalid, "token name is required")
	})
}
