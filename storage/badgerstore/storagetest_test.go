package badgerstore

import (
	"context"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/storagetest"
)

// The Badger backend keeps the backend contract.
func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		NewDatabase: func(t *testing.T) storagetest.Database {
			dir := t.TempDir()
			return storagetest.Database{Open: func(t *testing.T, sub kv.Subscriber) kv.Backend {
				b, err := Open(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.Close() })
				if err := b.Subscribe(context.Background(), sub); err != nil {
					t.Fatal(err)
				}
				return b
			}}
		},
		ExpiryWithin: 2 * time.Second, // Badger keeps expiry times in whole seconds
	})
}
