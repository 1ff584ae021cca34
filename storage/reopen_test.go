package storage_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestEverythingSurvivesReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
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
		if err := s.Alerting().PutAlertStates(ctx, alertLease(t, s), map[string]AlertState{perm.ID: {NotifiedDays: 30, RaisedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		before, _ := s.ListAudit(ctx, 1000)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = db.open(t, clock)
		if u, err := s.GetUser(ctx, "root"); err != nil || !u.Admin {
			t.Fatalf("user after reopen = %+v, %v", u, err)
		}
		if _, err := s.CheckPassword(ctx, "alice", "pw-alice"); err != nil {
			t.Fatalf("password after reopen: %v", err)
		}
		for _, c := range []struct {
			sec  string
			want verifier.Result
			id   string
		}{{permSec, verifier.ResultOK, perm.ID}, {tmpSec, verifier.ResultOK, tmp.ID}, {rotOld, verifier.ResultOK, rot.ID}, {rotNew, verifier.ResultOK, ""}} {
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
		if _, r := s.Verify(rotOld); r != verifier.ResultRevoked {
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
		if n := s.Alerting().CountTokens(); n[Permanent] != 2 || n[Temporary] != 1 {
			t.Fatalf("CountTokens after reopen = %v", n)
		}
		// The name index survived too.
		_, _, err = s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
		wantErr(t, err, ErrConflict, "already has")
	})
}

func TestExpiredTemporaryTokenNotLoaded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		mustCreateUser(t, s, "alice", false)
		sec, _, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		s.Close()
		clock.Advance(2 * time.Hour)
		s = db.open(t, clock)
		if _, r := s.Verify(sec); r != verifier.ResultUnknown {
			t.Fatalf("expired temporary token after reopen: %v", r)
		}
		if ts, _ := s.ListUserTokens(context.Background(), "alice"); len(ts) != 0 {
			t.Fatalf("expired temporary token listed after reopen: %+v", ts)
		}
	})
}

func TestAuditSequenceSurvivesReopenWithSameTime(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0) // the clock never moves: keys differ only by sequence
		s := db.open(t, clock)
		ctx := context.Background()
		for i := range 3 {
			if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: string(rune('a' + i))}); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		s = db.open(t, clock)
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
	})
}

// TestReopenLoadsEveryToken checks that the loader, which on Badger splits
// the key space between goroutines, misses and duplicates nothing.
func TestReopenLoadsEveryToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
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
		s = db.open(t, clock)
		for sec, id := range secrets {
			if got, r := s.Verify(sec); r != verifier.ResultOK || got.TokenID != id {
				t.Fatalf("token %s after reopen: %v", id, r)
			}
		}
		if n := s.Alerting().CountTokens(); n[Temporary] != 10 || n[Permanent] != 30 {
			t.Fatalf("CountTokens after reopen = %v; want 10 temporary, 30 permanent", n)
		}
	})
}

// TestCloseDuringReads closes the store while readers are busy, including
// a read nested inside ForEachPermanentToken: nothing may deadlock, panic
// or return anything but success or the closed error.
func TestCloseDuringReads(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		_, meta, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		ctx := context.Background()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					err := s.Alerting().ForEachPermanentToken(ctx, func(tk Token) error {
						_, _, err := s.GetAlertState(ctx, tk.ID)
						return err
					})
					if _, err2 := s.GetToken(ctx, meta.ID); err == nil {
						err = err2
					}
					if err != nil {
						if !errors.Is(err, ErrClosed) {
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
	})
}

func TestReopenAfterCloseAndCloseTwice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, testtools.NewFakeClock(t0))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if _, err := s.CreateUser(context.Background(), NewUser{Username: "a", Password: "x"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("write after Close = %v", err)
		}
		db.open(t, testtools.NewFakeClock(t0)) // the database was released
	})
}

// A token record whose user does not exist (left by an interrupted
// deletion) is skipped at open and removed; a record that does not decode
// stops the open with an error that says so, every time.
func TestOpenSkipsOrphanTokensAndRefusesCorruptOnes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, testtools.NewFakeClock(t0))
		orphanKey, orphan := SyntheticRecord("ghost", 1, t0, t0.Add(time.Hour))
		rawUpdate(t, s, func(w kv.Writer) error { return w.Set(orphanKey, orphan, 0) })
		s.Close()

		core, logs := observer.New(zapcore.WarnLevel)
		s = db.openWith(t, Options{Clock: testtools.NewFakeClock(t0), Logger: zap.New(core)})
		if logs.FilterMessage("removed the tokens of deleted users left by an interrupted deletion").Len() != 1 {
			t.Fatalf("no warning about the orphan: %v", logs.All())
		}
		if n := s.Alerting().CountTokens(); n[Permanent] != 0 {
			t.Fatalf("orphan token counted: %v", n)
		}
		rawView(t, s, func(r kv.Reader) error {
			if _, found, err := r.Get(orphanKey); found || err != nil {
				t.Fatalf("orphan record still stored after open (%v)", err)
			}
			return nil
		})
		rawUpdate(t, s, func(w kv.Writer) error { return w.Set(TokenKey("tok_bad"), []byte{9, 9}, 0) })
		s.Close()
		_, err := Open(context.Background(), db.backend(t, nil), Options{})
		if err == nil || !strings.Contains(err.Error(), "corrupt token record") {
			t.Fatalf("open with a corrupt record = %v", err)
		}
		// The failed open released the database: trying again fails the same way.
		if _, err2 := Open(context.Background(), db.backend(t, nil), Options{}); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("second open = %v; want %v", err2, err)
		}
	})
}
