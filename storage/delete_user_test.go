package storage_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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

// A user with more tokens than one Badger transaction can delete is
// deleted all the same, with one audit entry, and nothing of theirs is
// left on disk or in memory.
func TestDeleteUserWithManyTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		// Badger's transaction size limit was hit at about 25k tokens;
		// PostgreSQL has none, so a few batches prove the same there.
		n := 60_000
		if db.Kind != "badger" {
			n = 3 * MaxBatch
		}
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "bulk", false)
		mustCreateUser(t, s, "other", false)
		secrets := createUserTokens(t, s, clock.Now(), "bulk", n)
		keep, _, _ := mustToken(t, s, "other", "keep", Permanent, clock.Now().Add(time.Hour))

		if err := s.DeleteUser(ctx, "bulk"); err != nil {
			t.Fatalf("DeleteUser with %d tokens: %v", n, err)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if _, r := s.Verify(secrets[i]); r != verifier.ResultUnknown {
				t.Fatalf("token %d of the deleted user verifies as %v", i, r)
			}
		}
		if _, r := s.Verify(keep); r != verifier.ResultOK {
			t.Fatalf("another user's token verifies as %v", r)
		}
		if c := s.Alerting().CountTokens(); c[Permanent] != 1 {
			t.Fatalf("CountTokens = %v; want only the other user's token", c)
		}
		a, err := s.ListAudit(ctx, 1)
		if err != nil || len(a) != 1 || a[0].Action != ActionUserDelete || a[0].Detail != fmt.Sprintf("%d tokens deleted", n) {
			t.Fatalf("last audit entry = %+v, %v; want one user delete of %d tokens", a, err, n)
		}
		if left := countKeysWith(t, s, "bulk"); left != 0 {
			t.Fatalf("%d keys of the deleted user's tokens are left", left)
		}
		s.Close()
		core, logs := observer.New(zapcore.WarnLevel)
		db.openWith(t, Options{Clock: clock, Logger: zap.New(core)})
		if logs.Len() != 0 {
			t.Fatalf("reopen found leftovers: %v", logs.All())
		}
	})
}

// countKeysWith counts the token keys (t/, ut/, un/, e/) that belong to
// a token of user, by decoding records and by key prefix.
func countKeysWith(t *testing.T, s *Store, user string) int {
	t.Helper()
	n := 0
	rawView(t, s, func(r kv.Reader) error {
		for _, p := range []string{PrefixToken, PrefixExpiry} {
			err := r.Scan(p, kv.ScanOptions{}, func(_, val []byte) error {
				if len(val) == 0 {
					return nil
				}
				rec, _, err := DecodeTokenRecord(val)
				if err == nil && rec.User == user {
					n++
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		for _, p := range []string{PrefixUserToken + user + "/", PrefixName + user + "/"} {
			if err := r.Scan(p, kv.ScanOptions{KeysOnly: true}, func(_, _ []byte) error { n++; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	return n
}

// Between DeleteUser's first transaction and the end of the purge, the
// user's tokens already stop working and are no longer visible, and the
// name cannot be taken again until the purge is done.
func TestDeleteUserTokensStopBeforeThePurge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		smallBatches(db)
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		perm, pm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		expired, _, _ := mustToken(t, s, "alice", "old", Permanent, clock.Now().Add(time.Minute))
		tmp, tm, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		clock.Advance(2 * time.Minute)
		// In use, so the verifier answers it from its hot table, which must
		// see the delete too.
		if _, r := s.Verify(perm); r != verifier.ResultOK {
			t.Fatalf("before the delete: %v; want ok", r)
		}

		batches := 0
		s.SetPurgeHook(func() {
			batches++
			if batches > 1 {
				return
			}
			for _, sec := range []string{perm, expired, tmp} {
				if _, r := s.Verify(sec); r != verifier.ResultUnknown {
					t.Errorf("during the purge a token of the deleted user verifies as %v; want unknown", r)
				}
			}
			for _, id := range []string{pm.ID, tm.ID} {
				if _, err := s.GetToken(ctx, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("during the purge GetToken(%s) = %v; want not found", id, err)
				}
			}
			all, err := s.ListTokens(ctx, TokenFilter{})
			if err != nil || len(all) != 0 {
				t.Errorf("during the purge ListTokens = %+v, %v; want none", all, err)
			}
			walked := 0
			if err := s.Alerting().ForEachPermanentToken(ctx, func(Token) error { walked++; return nil }); err != nil || walked != 0 {
				t.Errorf("during the purge the walk saw %d tokens (%v); want none", walked, err)
			}
			if _, err := s.GetUser(ctx, "alice"); !errors.Is(err, ErrNotFound) {
				t.Errorf("during the purge GetUser = %v; want not found", err)
			}
			_, err = s.CreateUser(ctx, NewUser{Username: "alice", Password: "pw"})
			wantErrNoFatal(t, err, ErrConflict, "still being deleted")
			if a, _ := s.ListAudit(ctx, 1); len(a) != 1 || a[0].Action != ActionUserDelete {
				t.Errorf("during the purge the last audit entry is %+v; want the user delete", a)
			}
		})
		if err := s.DeleteUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if batches < 3 {
			t.Fatalf("the purge ran %d batches; want one per token", batches)
		}
		mustCreateUser(t, s, "alice", false) // free again once purged
	})
}

func wantErrNoFatal(t *testing.T, err, target error, mentions string) {
	t.Helper()
	if !errors.Is(err, target) || !strings.Contains(err.Error(), mentions) {
		t.Errorf("error = %v; want %v mentioning %q", err, target, mentions)
	}
}

// A crash after DeleteUser's first transaction leaves the user's token
// records without their user: with the tombstone that reserves the name
// (ud/<name>), or, in stores written by versions before tombstones,
// without. The next open removes them, so a user re-created with the same
// name inherits nothing, now or after a restart.
func TestInterruptedUserDeleteDoesNotResurrectTokens(t *testing.T) {
	for _, tombstone := range []bool{true, false} {
		t.Run(fmt.Sprintf("tombstone=%t", tombstone), func(t *testing.T) { testInterruptedUserDelete(t, tombstone) })
	}
}

func testInterruptedUserDelete(t *testing.T, tombstone bool) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		smallBatches(db)
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		perm, pm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		tmp, _, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		if err := s.Alerting().PutAlertStates(ctx, alertLease(t, s), map[string]AlertState{pm.ID: {NotifiedDays: 7}}); err != nil {
			t.Fatal(err)
		}
		bobs, _, _ := mustToken(t, s, "bob", "ci", Permanent, clock.Now().Add(time.Hour))
		// The crash: only the first transaction happened.
		rawUpdate(t, s, func(w kv.Writer) error {
			if tombstone {
				if err := w.Set(DeletedUserKey("alice"), nil, 0); err != nil {
					return err
				}
			}
			return w.Delete(UserKey("alice"))
		})
		s.Close()

		s = db.open(t, clock)
		mustCreateUser(t, s, "alice", false)
		var fresh []string // ids of the re-created user's own tokens
		check := func(s *Store, when string) {
			t.Helper()
			for _, sec := range []string{perm, tmp} {
				if _, r := s.Verify(sec); r != verifier.ResultUnknown {
					t.Fatalf("%s: an old token of the re-created user verifies as %v", when, r)
				}
			}
			ts, err := s.ListUserTokens(ctx, "alice")
			var ids []string
			for _, tk := range ts {
				ids = append(ids, tk.ID)
			}
			if err != nil || !slices.Equal(ids, fresh) {
				t.Fatalf("%s: the re-created user lists %+v, %v; want only their own tokens %v", when, ts, err, fresh)
			}
			if _, err := s.GetToken(ctx, pm.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%s: GetToken of an old token = %v", when, err)
			}
			if _, found, _ := s.GetAlertState(ctx, pm.ID); found {
				t.Fatalf("%s: an old token's alert state is left", when)
			}
			if _, r := s.Verify(bobs); r != verifier.ResultOK {
				t.Fatalf("%s: another user's token verifies as %v", when, r)
			}
		}
		check(s, "after the crash")
		// The old token name is free for the new user.
		_, tk, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		fresh = append(fresh, tk.ID)
		s.Close()
		check(db.open(t, clock), "after another restart")
	})
}
