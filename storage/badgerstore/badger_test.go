package badgerstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
)

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, testtools.NewFakeClock(t0))
	_, err := Open(dir, nil)
	if err == nil || err.Error() != "storage directory "+dir+" is in use by another process" {
		t.Fatalf("second Open = %v; want the in-use message", err)
	}
}

func TestOpenUnwritablePath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(filepath.Join(file, "db"), nil)
	if err == nil || !strings.Contains(err.Error(), "cannot create storage directory") {
		t.Fatalf("Open under a file = %v", err)
	}
}

func TestSyncWritesIsOn(t *testing.T) {
	b, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.db.Opts().SyncWrites {
		t.Fatal("Badger must fsync every commit: a 2xx answer promises the change survives a crash")
	}
}

// TestBadgerLogsOnlyWarnings opens, writes and closes with a logger that
// records everything, and checks Badger's chatter below WARN is dropped.
func TestBadgerLogsOnlyWarnings(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := openStoreWith(t.TempDir(), storage.Options{Logger: zap.New(core), PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctxAs("root"), storage.NewUser{Username: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, e := range logs.All() {
		if e.Level < zapcore.WarnLevel {
			t.Errorf("logged below WARN: %s %q", e.Level, e.Message)
		}
	}
	// The adapter itself passes warnings through.
	badgerLogger{zap.New(core).Sugar()}.Warningf("disk %s", "slow")
	if got := logs.FilterMessage("badger: disk slow").Len(); got != 1 {
		t.Fatalf("badger warning not passed to zap (%d entries)", got)
	}
}
