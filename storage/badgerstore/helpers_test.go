package badgerstore

import (
	"context"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/storage"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// openStore opens a store on the Badger directory dir with a fast bcrypt,
// and closes it when the test ends.
func openStore(t testing.TB, dir string, clock storage.Clock) *storage.Store {
	t.Helper()
	s, err := OpenStore(dir, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxAs(actor string) context.Context {
	return storage.WithActor(context.Background(), actor, "192.0.2.7")
}
