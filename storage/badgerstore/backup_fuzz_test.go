package badgerstore

import (
	"bytes"
	"context"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// FuzzRestore feeds arbitrary bytes as the stream after a backup's header
// to the loader Restore uses, over an in-memory Badger (opening a directory
// per input would allow a handful of inputs a minute). It must never panic
// or allocate without bound; damaged input is an error.
func FuzzRestore(f *testing.F) {
	src, err := openStoreWith(f.TempDir(), storage.Options{Clock: testtools.NewFakeClock(t0)})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := src.PutSetting(context.Background(), storage.SettingNotificationDays, "7"); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.Backup(context.Background(), &buf); err != nil {
		f.Fatal(err)
	}
	src.Close()
	good := buf.Bytes()[len(backupMagic):]
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	db, err := badger.Open(badgerOptions("", zap.NewNop()).WithInMemory(true).WithDir("").WithValueDir(""))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = loadFrames(db, bytes.NewReader(data))
	})
}
