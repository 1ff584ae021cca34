package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"
)

// readLastUsed reads the flushed last use of a token from disk.
func (s *Badger) readLastUsed(id string) (time.Time, bool, error) {
	var v []byte
	var found bool
	err := s.view(func(txn *badger.Txn) error {
		var err error
		v, found, err = getValue(txn, lastUsedKey(id))
		return err
	})
	if err != nil || !found {
		return time.Time{}, false, err
	}
	return nanosTime(int64(binary.BigEndian.Uint64(v))), true, nil
}

func TestSecondOpenFailsClearly(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir, NewFakeClock(t0))
	_, err := OpenBadger(dir, Options{})
	if err == nil || err.Error() != "storage directory "+dir+" is in use by another process" {
		t.Fatalf("second OpenBadger = %v; want the in-use message", err)
	}
}

func TestOpenUnwritablePath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenBadger(filepath.Join(file, "db"), Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot create storage directory") {
		t.Fatalf("OpenBadger under a file = %v", err)
	}
}

func TestReopenAfterCloseAndCloseTwice(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, NewFakeClock(t0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s.CreateUser(context.Background(), NewUser{Username: "a", Password: "x"}); !errors.Is(err, errClosed) {
		t.Fatalf("write after Close = %v", err)
	}
	openTest(t, dir, NewFakeClock(t0)) // the lock was released
}

func TestEverythingSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	clock := NewFakeClock(t0)
	s := openTest(t, dir, clock)
	ctx := ctxAs("root")
	mustCreateUser(t, s, "root", true)
	mustCreateUser(t, s, "alice", false)
	permSec, perm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(30*24*time.Hour))
	tmpSec, tmp, _ := mustToken(t, s, "root", "", Temporary, clock.Now().Add(12*time.Hour))
	rotOld, rot, _ := mustToken(t, s, "alice", "rot", Permanent, clock.Now().Add(24*time.Hour))
	rotNew, _, err := s.RotateToken(ctx, "alice", rot.ID, time.Hour, clock.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(ctx, SettingNotificationDays, "30;7"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAlertStates(ctx, map[string]AlertState{perm.ID: {NotifiedDays: 30, RaisedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.ListAudit(ctx, 1000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir, clock)
	if u, err := s.GetUser(ctx, "root"); err != nil || !u.Admin {
		t.Fatalf("user after reopen = %+v, %v", u, err)
	}
	if _, err := s.CheckPassword(ctx, "alice", "pw-alice"); err != nil {
		t.Fatalf("password after reopen: %v", err)
	}
	for _, c := range []struct {
		sec  string
		want VerifyResult
		id   string
	}{{permSec, ResultOK, perm.ID}, {tmpSec, ResultOK, tmp.ID}, {rotOld, ResultOK, rot.ID}, {rotNew, ResultOK, ""}} {
		id, r := s.Verify(c.sec)
		if r != c.want || (c.id != "" && id.TokenID != c.id) {
			t.Fatalf("Verify after reopen = %+v, %v; want %v", id, r, c.want)
		}
	}
	id, _ := s.Verify(tmpSec)
	if !id.Admin || id.Username != "root" || id.Kind != Temporary {
		t.Fatalf("temporary identity after reopen = %+v", id)
	}
	clock.Advance(time.Hour)
	if _, r := s.Verify(rotOld); r != ResultRevoked {
		t.Fatalf("rotated token after grace, after reopen: %v", r)
	}
	if v, err := s.GetSetting(ctx, SettingNotificationDays); err != nil || v != "30;7" {
		t.Fatalf("setting after reopen = %q, %v", v, err)
	}
	if st, found, err := s.GetAlertState(ctx, perm.ID); err != nil || !found || st.NotifiedDays != 30 || !st.RaisedAt.Equal(t0) {
		t.Fatalf("alert state after reopen = %+v, %v, %v", st, found, err)
	}
	after, _ := s.ListAudit(ctx, 1000)
	if len(after) != len(before) || after[0] != before[0] {
		t.Fatalf("audit after reopen: %d entries, newest %+v; before %d, %+v", len(after), after[0], len(before), before[0])
	}
	if n := s.CountTokens(); n[Permanent] != 2 || n[Temporary] != 1 {
		t.Fatalf("CountTokens after reopen = %v", n)
	}
	// The name index survived too.
	_, _, err = s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
	wantErr(t, err, ErrConflict, "already has")
}

func TestExpiredTemporaryTokenNotLoaded(t *testing.T) {
	dir := t.TempDir()
	clock := NewFakeClock(t0)
	s := openTest(t, dir, clock)
	mustCreateUser(t, s, "alice", false)
	sec, _, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
	s.Close()
	clock.Advance(2 * time.Hour)
	s = openTest(t, dir, clock)
	if _, r := s.Verify(sec); r != ResultUnknown {
		t.Fatalf("expired temporary token after reopen: %v", r)
	}
	if ts, _ := s.ListUserTokens(context.Background(), "alice"); len(ts) != 0 {
		t.Fatalf("expired temporary token listed after reopen: %+v", ts)
	}
}

func TestAuditSequenceSurvivesReopenWithSameTime(t *testing.T) {
	dir := t.TempDir()
	clock := NewFakeClock(t0) // the clock never moves: keys differ only by sequence
	s := openTest(t, dir, clock)
	ctx := context.Background()
	for i := range 3 {
		if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openTest(t, dir, clock)
	if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: "d"}); err != nil {
		t.Fatal(err)
	}
	a, _ := s.ListAudit(ctx, 10)
	var targets []string
	for _, e := range a {
		targets = append(targets, e.Target)
	}
	if strings.Join(targets, "") != "dcba" {
		t.Fatalf("audit targets newest first = %v; want d c b a", targets)
	}
}

// TestReopenLoadsEveryToken checks that the parallel loader, which splits
// the key space between goroutines, misses and duplicates nothing.
func TestReopenLoadsEveryToken(t *testing.T) {
	dir := t.TempDir()
	clock := NewFakeClock(t0)
	s := openTest(t, dir, clock)
	mustCreateUser(t, s, "alice", false)
	secrets := map[string]string{}
	for i := range 40 {
		kind, name := Permanent, "t"+strconv.Itoa(i)
		if i%4 == 0 {
			kind, name = Temporary, ""
		}
		sec, meta, _ := mustToken(t, s, "alice", name, kind, clock.Now().Add(time.Hour))
		secrets[sec] = meta.ID
	}
	s.Close()
	for _, workers := range []int{1, 3, 4} {
		if b := loadBounds(workers); len(b) != workers+1 || b[0] != prefixToken || b[workers] != "" {
			t.Fatalf("loadBounds(%d) = %q", workers, b)
		}
	}
	s = openTest(t, dir, clock)
	for sec, id := range secrets {
		if got, r := s.Verify(sec); r != ResultOK || got.TokenID != id {
			t.Fatalf("token %s after reopen: %v", id, r)
		}
	}
	if n := s.CountTokens(); n[Temporary] != 10 || n[Permanent] != 30 {
		t.Fatalf("CountTokens after reopen = %v; want 10 temporary, 30 permanent", n)
	}
}

// TestCloseDuringReads closes the store while readers are busy, including
// a read nested inside ForEachPermanentToken: nothing may deadlock, panic
// or return anything but success or the closed error.
func TestCloseDuringReads(t *testing.T) {
	s, clock := newTestStore(t)
	mustCreateUser(t, s, "alice", false)
	_, meta, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				err := s.ForEachPermanentToken(ctx, func(tk Token) error {
					_, _, err := s.GetAlertState(ctx, tk.ID)
					return err
				})
				if _, err2 := s.GetToken(ctx, meta.ID); err == nil {
					err = err2
				}
				if err != nil {
					if !errors.Is(err, errClosed) {
						t.Errorf("read during Close: %v", err)
					}
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond) // let the readers get going; not a timing assertion
	done := make(chan error)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close deadlocked with readers in flight")
	}
	wg.Wait()
}

// TestBadgerLogsOnlyWarnings opens, writes and closes with a logger that
// records everything, and checks Badger's chatter below WARN is dropped.
func TestBadgerLogsOnlyWarnings(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := OpenBadger(t.TempDir(), Options{Logger: zap.New(core), PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	mustCreateUser(t, s, "alice", false)
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

func TestOpenSkipsOrphanTokensAndRefusesCorruptOnes(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, NewFakeClock(t0))
	orphan := benchRecord(1, HashSecret(NewSecret(Permanent)), Permanent, t0.Add(time.Hour))
	orphan.User = "ghost"
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(tokenKey(orphan.ID)), orphan.marshal()) }); err != nil {
		t.Fatal(err)
	}
	s.Close()

	core, logs := observer.New(zapcore.WarnLevel)
	s, err := OpenBadger(dir, Options{Clock: NewFakeClock(t0), Logger: zap.New(core)})
	if err != nil {
		t.Fatalf("open with an orphan token: %v", err)
	}
	if logs.FilterMessage("removed the tokens of deleted users left by an interrupted deletion").Len() != 1 {
		t.Fatalf("no warning about the orphan: %v", logs.All())
	}
	if n := s.CountTokens(); n[Permanent] != 0 {
		t.Fatalf("orphan token counted: %v", n)
	}
	if _, found, err := s.readToken(orphan.ID); found || err != nil {
		t.Fatalf("orphan record still on disk after open (%v)", err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(tokenKey("tok_bad")), []byte{9, 9}) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = OpenBadger(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot load storage directory") || !strings.Contains(err.Error(), "corrupt token record") {
		t.Fatalf("open with a corrupt record = %v", err)
	}
	// The failed open released the directory lock: trying again fails the same way.
	if _, err2 := OpenBadger(dir, Options{}); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second open = %v; want %v", err2, err)
	}
}

// readToken reads a token record from disk as it is, live or not.
func (s *Badger) readToken(id string) (tokenRecord, bool, error) {
	var rec tokenRecord
	var found bool
	err := s.view(func(txn *badger.Txn) error {
		var err error
		rec, found, err = getToken(txn, id)
		return err
	})
	return rec, found, err
}
