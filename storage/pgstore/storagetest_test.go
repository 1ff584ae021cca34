package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/pgstore"
	"github.com/apitokens/caddy-api-tokens/storage/storagetest"
)

// The PostgreSQL backend keeps the backend contract, with several nodes
// on one database.
func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		NewDatabase: func(t *testing.T) storagetest.Database {
			dsn := testtools.PostgresDatabase(t)
			return storagetest.Database{
				Open: func(t *testing.T, sub kv.Subscriber) kv.Backend {
					// Expired rows are deleted by the maintenance, here
					// often so the TTL test need not wait a minute.
					b, err := pgstore.Open(context.Background(), dsn, pgstore.Options{MaintenanceInterval: 100 * time.Millisecond})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { b.Close() })
					if err := b.Subscribe(context.Background(), sub); err != nil {
						t.Fatal(err)
					}
					return b
				},
				// As the maintenance leaves a change log that a node
				// away for longer than the retention missed.
				PruneChanges: func(t *testing.T) {
					conn, err := pgx.Connect(context.Background(), dsn)
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close(context.Background())
					if _, err := conn.Exec(context.Background(), `DELETE FROM api_tokens_changes;
						UPDATE api_tokens_feed SET pruned_below = pg_current_xact_id()::text::bigint + 1`); err != nil {
						t.Fatal(err)
					}
				},
			}
		},
		Fleet:        true,
		ExpiryWithin: 2 * time.Second,
	})
}
