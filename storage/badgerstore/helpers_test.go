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
	s, err := openStoreWith(dir, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ctxAs(actor string) context.Context {
	return storage.WithActor(context.Background(), actor, "192.0.2.7")
}

// allUsers lists every user of s, a page at a time.
func allUsers(t testing.TB, s *storage.Store) []storage.User {
	t.Helper()
	return allPages(t, func(cursor string) ([]storage.User, string, error) {
		return s.ListUsersPage(context.Background(), cursor, storage.MaxPageLimit)
	})
}

// allAudit lists every audit entry of s, newest first, a page at a time.
func allAudit(t testing.TB, s *storage.Store) []storage.AuditEntry {
	t.Helper()
	return allPages(t, func(cursor string) ([]storage.AuditEntry, string, error) {
		return s.ListAuditPage(context.Background(), cursor, storage.MaxPageLimit)
	})
}

func allPages[T any](t testing.TB, page func(cursor string) ([]T, string, error)) []T {
	t.Helper()
	var all []T
	for cursor := ""; ; {
		items, next, err := page(cursor)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, items...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

// openStoreWith opens the rules over the Badger database in dir, as the
// api_tokens app does.
func openStoreWith(dir string, opts storage.Options) (*storage.Store, error) {
	b, err := Open(dir, opts.Logger)
	if err != nil {
		return nil, err
	}
	return storage.Open(context.Background(), b, opts)
}
