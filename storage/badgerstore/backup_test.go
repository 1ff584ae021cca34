package badgerstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// TestBackupRestoreRoundTrip backs up a live store while another goroutine
// keeps creating users, restores the snapshot into a new directory and
// finds users, passwords, tokens (which still verify), last use, settings
// and the audit log, and a consistent cut of the concurrent writes.
func TestBackupRestoreRoundTrip(t *testing.T) {
	clock := testtools.NewFakeClock(t0)
	s := openStore(t, t.TempDir(), clock)
	ctx := storage.WithActor(context.Background(), "root", "192.0.2.1")
	if _, err := s.CreateUser(ctx, storage.NewUser{Username: "alice", Email: "alice@example.com", Password: "pw-alice"}); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := s.CreateToken(ctx, storage.NewToken{User: "alice", Name: "ci", Kind: storage.Permanent, ExpiresAt: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(ctx, storage.SettingNotificationDays, "30;7"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if _, r := s.Verifier().Verify(secret, nil); r != verifier.ResultOK { // a last use, batched in memory
		t.Fatalf("Verify = %v", r)
	}

	// Writers keep committing while the backup streams.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.CreateUser(ctx, storage.NewUser{Username: fmt.Sprintf("w%d", i), Password: "pw"}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var buf bytes.Buffer
	err = s.Backup(context.Background(), &buf)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if err := Restore(dir, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	r := openStore(t, dir, clock)
	if _, err := r.CheckPassword(ctx, "alice", "pw-alice"); err != nil {
		t.Errorf("alice's password after restore: %v", err)
	}
	if id, res := r.Verifier().Verify(secret, nil); res != verifier.ResultOK || id.TokenID != tok.ID {
		t.Errorf("token after restore: %+v %v", id, res)
	}
	if got, _, err := r.ListUserTokensPage(ctx, "alice", "", 10); err != nil || len(got) != 1 || got[0].ID != tok.ID ||
		got[0].LastUsedAt == nil || !got[0].LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("token metadata after restore: %+v, %v; want %s last used at %v", got, err, tok.ID, t0.Add(time.Minute))
	}
	if v, err := r.GetSetting(ctx, storage.SettingNotificationDays); err != nil || v != "30;7" {
		t.Errorf("setting after restore: %q, %v", v, err)
	}
	wantSameAudit(t, s, r)
	// Each concurrent user is whole (it logs in) and the cut has no holes:
	// users w0..w(n-1) are there and nothing after.
	users := allUsers(t, r)
	n := len(users) - 1 // minus alice
	for i := range n {
		if _, err := r.CheckPassword(ctx, fmt.Sprintf("w%d", i), "pw"); err != nil {
			t.Errorf("user w%d of %d concurrent ones is missing or broken after restore: %v", i, n, err)
		}
	}
	t.Logf("backup of %d bytes caught %d of the users written during it", buf.Len(), n)

	// New writes continue the audit sequence after the restored entries
	// instead of overwriting one.
	before := allAudit(t, r)
	if _, err := r.PutSetting(ctx, storage.SettingNotificationDays, "5"); err != nil {
		t.Fatal(err)
	}
	after := allAudit(t, r)
	if len(after) != len(before)+1 || after[0].Action != storage.ActionSettingPut {
		t.Errorf("a write after restore: audit went from %d to %d entries, newest %+v", len(before), len(after), after[0])
	}
}

// wantSameAudit checks that the restored store has every audit entry the
// backup could have seen, in the same order (the restored log is a prefix
// of the source's, which kept growing).
func wantSameAudit(t *testing.T, src, restored *storage.Store) {
	t.Helper()
	want, got := allAudit(t, src), allAudit(t, restored)
	if len(got) == 0 || len(got) > len(want) {
		t.Fatalf("restored audit has %d entries, source %d", len(got), len(want))
	}
	off := len(want) - len(got)
	for i := range got {
		if got[i] != want[off+i] {
			t.Fatalf("restored audit entry %d = %+v, want %+v", i, got[i], want[off+i])
		}
	}
}

func TestRestoreRefusesNonEmptyDirectory(t *testing.T) {
	src := openStore(t, t.TempDir(), testtools.NewFakeClock(t0))
	var buf bytes.Buffer
	if err := src.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Restore(dir, bytes.NewReader(buf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("Restore into a non-empty dir = %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "keep.txt")); string(b) != "x" {
		t.Error("Restore touched the non-empty directory")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Restore wrote into the non-empty directory: %v", entries)
	}
}

// TestRestoreRejectsDamagedBackups feeds files that are not backups, and
// backups cut short or with a damaged frame length: each is an error that
// says so, never a panic or a huge allocation.
func TestRestoreRejectsDamagedBackups(t *testing.T) {
	src := openStore(t, t.TempDir(), testtools.NewFakeClock(t0))
	if _, err := src.CreateUser(context.Background(), storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	hugeFrame := append([]byte(backupMagic), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty file", "", "not an api_tokens backup"},
		{"other file", "hello, world, this is not a backup at all", "not an api_tokens backup"},
		{"cut in a frame", string(good[:len(good)-3]), "damaged"},
		{"cut in a length", string(good[:len(backupMagic)+3]), "damaged"},
		{"huge frame length", string(hugeFrame), "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			err := Restore(dir, strings.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore = %v, want an error mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(dir); tc.want == "not an api_tokens backup" && !os.IsNotExist(err) {
				t.Errorf("a file that is not a backup left the directory behind: %v", err)
			}
		})
	}
}

// TestBackupDirOffline backs up a closed directory, and refuses one that a
// running store holds.
func TestBackupDirOffline(t *testing.T) {
	dir := t.TempDir()
	s, err := openStoreWith(dir, storage.Options{Clock: testtools.NewFakeClock(t0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(context.Background(), storage.SettingNotificationDays, "9"); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := BackupDir(dir, &buf); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("BackupDir of an open store = %v, want the in-use error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := BackupDir(dir, &buf); err != nil {
		t.Fatalf("BackupDir: %v", err)
	}
	restored := filepath.Join(t.TempDir(), "r")
	if err := Restore(restored, &buf); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, restored, testtools.NewFakeClock(t0))
	if v, err := r.GetSetting(context.Background(), storage.SettingNotificationDays); err != nil || v != "9" {
		t.Errorf("setting after offline round trip: %q, %v", v, err)
	}
	if err := BackupDir(filepath.Join(t.TempDir(), "missing"), &buf); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("BackupDir of a missing dir = %v", err)
	}
}
