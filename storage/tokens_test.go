package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestCreatePermanentToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		exp := clock.Now().Add(365 * 24 * time.Hour)
		sec, meta, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "ci deploy", Kind: Permanent, ExpiresAt: exp, CreatedBy: "root"})
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := secret.Parse(sec); !ok || k != Permanent {
			t.Fatalf("secret %q does not parse as permanent", sec)
		}
		want := Token{ID: meta.ID, User: "alice", Name: "ci deploy", Kind: Permanent, CreatedAt: t0, CreatedBy: "root", ExpiresAt: exp, Status: StatusActive}
		if !strings.HasPrefix(meta.ID, "tok_") || !tokensEqual(meta, want) {
			t.Fatalf("meta = %+v; want %+v", meta, want)
		}
		got, err := s.GetToken(ctx, meta.ID)
		if err != nil || !tokensEqual(got, want) {
			t.Fatalf("GetToken = %+v, %v", got, err)
		}
		id, r := s.Verify(sec)
		if r != verifier.ResultOK || id.Username != "alice" || id.TokenID != meta.ID || id.Kind != Permanent || id.Admin {
			t.Fatalf("Verify = %+v, %v", id, r)
		}
		a, _ := s.ListAudit(ctx, 1)
		if a[0].Action != ActionTokenCreate || a[0].Target != meta.ID || a[0].Actor != "root" || a[0].ClientIP != "192.0.2.7" {
			t.Fatalf("audit = %+v", a[0])
		}
	})
}

func tokensEqual(a, b Token) bool {
	return a.ID == b.ID && a.User == b.User && a.Name == b.Name && a.Kind == b.Kind &&
		a.CreatedAt.Equal(b.CreatedAt) && a.CreatedBy == b.CreatedBy && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.Status == b.Status && a.RotatedTo == b.RotatedTo &&
		timePtrEqual(a.RevokedAt, b.RevokedAt) && timePtrEqual(a.LastUsedAt, b.LastUsedAt)
}

func timePtrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func TestCreateTokenValidation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "dis", false)
		if _, err := s.UpdateUser(ctx, "dis", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		later := clock.Now().Add(time.Hour)
		cases := []struct {
			nt       NewToken
			target   error
			mentions string
		}{
			{NewToken{User: "alice", Kind: Permanent, ExpiresAt: later}, ErrInvalid, "name is required"},
			{NewToken{User: "alice", Name: strings.Repeat("n", 65), Kind: Permanent, ExpiresAt: later}, ErrInvalid, "at most 64"},
			{NewToken{User: "alice", Name: "bad\nname", Kind: Permanent, ExpiresAt: later}, ErrInvalid, "control"},
			{NewToken{User: "alice", Name: " padded", Kind: Permanent, ExpiresAt: later}, ErrInvalid, "spaces"},
			{NewToken{User: "alice", Name: "\xff", Kind: Permanent, ExpiresAt: later}, ErrInvalid, "UTF-8"},
			{NewToken{User: "alice", Name: "x", Kind: "forever", ExpiresAt: later}, ErrInvalid, "kind"},
			{NewToken{User: "alice", Name: "x", Kind: Permanent, ExpiresAt: clock.Now()}, ErrInvalid, "not in the future"},
			{NewToken{User: "alice", Name: "x", Kind: Permanent, ExpiresAt: clock.Now().Add(-time.Hour)}, ErrInvalid, "not in the future"},
			{NewToken{User: "alice", Kind: Temporary}, ErrInvalid, "not in the future"},
			{NewToken{User: "alice", Name: "x", Kind: Permanent, ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrInvalid, "too far"},
			{NewToken{User: "nobody", Name: "x", Kind: Permanent, ExpiresAt: later}, ErrNotFound, `"nobody"`},
			{NewToken{User: "dis", Name: "x", Kind: Permanent, ExpiresAt: later}, ErrInvalid, "disabled"},
		}
		for _, c := range cases {
			_, _, err := s.CreateToken(ctx, c.nt)
			wantErr(t, err, c.target, c.mentions)
		}
		if all, _ := s.ListTokens(ctx, TokenFilter{}); len(all) != 0 {
			t.Fatalf("rejected tokens were stored: %+v", all)
		}
		if _, _, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "Déploiement ✓ 2", Kind: Permanent, ExpiresAt: later}); err != nil {
			t.Fatalf("printable unicode name refused: %v", err)
		}
	})
}

func TestTokenNameUniquePerUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		exp := clock.Now().Add(time.Hour)
		_, first, _ := mustToken(t, s, "alice", "ci", Permanent, exp)
		_, _, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: exp})
		wantErr(t, err, ErrConflict, `already has a token named "ci"`)
		mustToken(t, s, "bob", "ci", Permanent, exp) // other users may use the name
		// Expired tokens keep their name until deleted.
		clock.Advance(2 * time.Hour)
		_, _, err = s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
		wantErr(t, err, ErrConflict, "already has")
		if err := s.DeleteToken(ctx, "alice", first.ID); err != nil {
			t.Fatal(err)
		}
		mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		// Login tokens share the name "login" freely.
		mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		_, tm, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		if tm.Name != "login" || tm.Kind != Temporary {
			t.Fatalf("temporary token meta = %+v", tm)
		}
	})
}

func TestDeleteToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		sec, meta, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		wantErr(t, s.DeleteToken(ctx, "bob", meta.ID), ErrNotFound, "has no token")
		if _, r := s.Verify(sec); r != verifier.ResultOK {
			t.Fatal("failed delete by another user broke the token")
		}
		wantErr(t, s.DeleteToken(ctx, "alice", "tok_missing"), ErrNotFound, "has no token")
		if err := s.DeleteToken(ctx, "alice", meta.ID); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(sec); r != verifier.ResultUnknown {
			t.Fatalf("deleted token verifies as %v", r)
		}
		if _, err := s.GetToken(ctx, meta.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetToken after delete: %v", err)
		}
		wantErr(t, s.DeleteToken(ctx, "alice", meta.ID), ErrNotFound, "has no token")
		a, _ := s.ListAudit(ctx, 1)
		if a[0].Action != ActionTokenDelete || a[0].Target != meta.ID {
			t.Fatalf("audit = %+v", a[0])
		}
	})
}

func TestLogout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("alice")
		mustCreateUser(t, s, "alice", false)
		tmp, tm, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		_, pm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		wantErr(t, s.Logout(ctx, pm.ID), ErrInvalid, "permanent")
		if err := s.Logout(ctx, tm.ID); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(tmp); r != verifier.ResultUnknown {
			t.Fatalf("logged-out token verifies as %v", r)
		}
		wantErr(t, s.Logout(ctx, tm.ID), ErrNotFound, "does not exist")
		a, _ := s.ListAudit(ctx, 1)
		if a[0].Action != ActionLogout || a[0].Target != tm.ID || a[0].Actor != "alice" {
			t.Fatalf("audit = %+v", a[0])
		}
	})
}

func TestRotateToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		oldSec, old, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(30*24*time.Hour))
		newExp := clock.Now().Add(365 * 24 * time.Hour)
		newSec, nm, err := s.RotateToken(ctx, "alice", old.ID, time.Hour, newExp)
		if err != nil {
			t.Fatal(err)
		}
		if nm.Name != "ci" || nm.ID == old.ID || !nm.ExpiresAt.Equal(newExp) || nm.Status != StatusActive || nm.Kind != Permanent {
			t.Fatalf("rotated meta = %+v", nm)
		}
		if _, r := s.Verify(newSec); r != verifier.ResultOK {
			t.Fatalf("new secret: %v", r)
		}
		if _, r := s.Verify(oldSec); r != verifier.ResultOK {
			t.Fatalf("old secret during grace: %v", r)
		}
		got, _ := s.GetToken(ctx, old.ID)
		if got.RotatedTo != nm.ID || got.RevokedAt == nil || !got.RevokedAt.Equal(t0.Add(time.Hour)) || got.Status != StatusActive {
			t.Fatalf("old token after rotate = %+v", got)
		}
		clock.Advance(time.Hour)
		if _, r := s.Verify(oldSec); r != verifier.ResultRevoked {
			t.Fatalf("old secret after grace: %v", r)
		}
		if got, _ := s.GetToken(ctx, old.ID); got.Status != StatusRevoked {
			t.Fatalf("old token status = %s", got.Status)
		}
		// The name moved: the new token owns it, so deleting the old one keeps it.
		if err := s.DeleteToken(ctx, "alice", old.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: newExp})
		wantErr(t, err, ErrConflict, "already has")
		a, _ := s.ListAudit(ctx, 2)
		if a[1].Action != ActionTokenRotate || a[1].Target != old.ID || !strings.Contains(a[1].Detail, nm.ID) {
			t.Fatalf("audit = %+v", a[1])
		}
	})
}

func TestRotateTokenZeroGraceRevokesAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		oldSec, old, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if _, _, err := s.RotateToken(ctxAs("root"), "alice", old.ID, 0, clock.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(oldSec); r != verifier.ResultRevoked {
			t.Fatalf("old secret after zero-grace rotation: %v", r)
		}
		if n := s.Alerting().CountTokens(); n[Permanent] != 1 {
			t.Fatalf("CountTokens = %v; want 1 active permanent", n)
		}
	})
}

func TestRotateTokenErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		exp := clock.Now().Add(2 * time.Hour)
		_, perm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		_, tmp, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		rotate := func(user, id string, grace time.Duration, e time.Time) error {
			_, _, err := s.RotateToken(ctx, user, id, grace, e)
			return err
		}
		wantErr(t, rotate("bob", perm.ID, 0, exp), ErrNotFound, "has no token")
		wantErr(t, rotate("alice", "tok_nope", 0, exp), ErrNotFound, "has no token")
		wantErr(t, rotate("alice", tmp.ID, 0, exp), ErrInvalid, "only permanent")
		wantErr(t, rotate("alice", perm.ID, -time.Second, exp), ErrInvalid, "negative")
		wantErr(t, rotate("alice", perm.ID, 0, clock.Now()), ErrInvalid, "not in the future")
		if err := rotate("alice", perm.ID, time.Minute, exp); err != nil {
			t.Fatal(err)
		}
		wantErr(t, rotate("alice", perm.ID, 0, exp), ErrConflict, "already rotated")

		_, expired, _ := mustToken(t, s, "alice", "old", Permanent, clock.Now().Add(time.Hour))
		clock.Advance(time.Hour)
		wantErr(t, rotate("alice", expired.ID, 0, clock.Now().Add(time.Hour)), ErrInvalid, "expired")
	})
}

func TestListTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		_, a1, _ := mustToken(t, s, "alice", "soon", Permanent, clock.Now().Add(5*24*time.Hour))
		clock.Advance(time.Second)
		_, a2, _ := mustToken(t, s, "alice", "later", Permanent, clock.Now().Add(300*24*time.Hour))
		_, b1, _ := mustToken(t, s, "bob", "", Temporary, clock.Now().Add(12*time.Hour))

		all, err := s.ListTokens(ctx, TokenFilter{})
		if err != nil || len(all) != 3 || all[0].ID != a1.ID || all[1].ID != a2.ID || all[2].ID != b1.ID {
			t.Fatalf("ListTokens = %+v, %v", all, err)
		}
		perm, _ := s.ListTokens(ctx, TokenFilter{Kind: Permanent})
		if len(perm) != 2 {
			t.Fatalf("Kind filter = %+v", perm)
		}
		soon, _ := s.ListTokens(ctx, TokenFilter{ExpiringBefore: clock.Now().Add(30 * 24 * time.Hour), Kind: Permanent})
		if len(soon) != 1 || soon[0].ID != a1.ID {
			t.Fatalf("ExpiringBefore filter = %+v", soon)
		}
		mine, err := s.ListUserTokens(ctx, "alice")
		if err != nil || len(mine) != 2 || mine[0].ID != a1.ID {
			t.Fatalf("ListUserTokens = %+v, %v", mine, err)
		}
		if _, err := s.ListUserTokens(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ListUserTokens(nobody) = %v", err)
		}
	})
}

func TestExpiredTemporaryTokensDisappearExpiredPermanentStay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		tmpSec, tmp, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		permSec, perm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if n := s.Alerting().CountTokens(); n[Temporary] != 1 || n[Permanent] != 1 {
			t.Fatalf("CountTokens = %v", n)
		}
		clock.Advance(time.Hour)
		if _, r := s.Verify(tmpSec); r != verifier.ResultExpired && r != verifier.ResultUnknown {
			t.Fatalf("expired temporary token: %v", r)
		}
		if _, r := s.Verify(permSec); r != verifier.ResultExpired {
			t.Fatalf("expired permanent token: %v", r)
		}
		ts, _ := s.ListUserTokens(ctx, "alice")
		if len(ts) != 1 || ts[0].ID != perm.ID || ts[0].Status != StatusExpired {
			t.Fatalf("ListUserTokens after expiry = %+v", ts)
		}
		if _, err := s.GetToken(ctx, tmp.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetToken(expired temporary) = %v", err)
		}
		if n := s.Alerting().CountTokens(); n[Temporary] != 0 || n[Permanent] != 0 {
			t.Fatalf("CountTokens after expiry = %v", n)
		}
		if _, r := s.Verify(permSec); r != verifier.ResultExpired {
			t.Fatalf("sweep touched the permanent token: %v", r)
		}
	})
}

func TestForEachPermanentTokenInExpiryOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		_, c, _ := mustToken(t, s, "alice", "c", Permanent, clock.Now().Add(30*time.Hour))
		_, a, _ := mustToken(t, s, "bob", "a", Permanent, clock.Now().Add(10*time.Hour))
		_, b, _ := mustToken(t, s, "alice", "b", Permanent, clock.Now().Add(20*time.Hour))
		mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		var got []string
		err := s.Alerting().ForEachPermanentToken(ctx, func(tk Token) error {
			got = append(got, tk.ID)
			return nil
		})
		if err != nil || strings.Join(got, ",") != strings.Join([]string{a.ID, b.ID, c.ID}, ",") {
			t.Fatalf("order = %v, %v; want a, b, c", got, err)
		}
		stop := errors.New("stop")
		n := 0
		err = s.Alerting().ForEachPermanentToken(ctx, func(Token) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("fn error did not stop the walk: %v after %d", err, n)
		}
		cancelled, cancel := context.WithCancel(ctx)
		n = 0
		err = s.Alerting().ForEachPermanentToken(cancelled, func(Token) error { n++; cancel(); return nil })
		if !errors.Is(err, context.Canceled) || n != 1 {
			t.Fatalf("cancelled context did not stop the walk: %v after %d", err, n)
		}
	})
}

func TestLastUsedMergedAndFlushed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		mustCreateUser(t, s, "alice", false)
		sec, meta, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(24*time.Hour))
		if got, _ := s.GetToken(context.Background(), meta.ID); got.LastUsedAt != nil {
			t.Fatalf("unused token has last_used_at %v", got.LastUsedAt)
		}
		clock.Advance(time.Minute)
		s.Verify(sec)
		used := clock.Now()
		got, _ := s.GetToken(context.Background(), meta.ID)
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last_used_at = %v; want %v (merged from memory)", got.LastUsedAt, used)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2 := db.open(t, clock)
		got, _ = s2.GetToken(context.Background(), meta.ID)
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(used) {
			t.Fatalf("last_used_at after reopen = %v; want %v (flushed on Close)", got.LastUsedAt, used)
		}
	})
}

func TestLastUsedFlushedPeriodically(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.openWith(t, Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: 10 * time.Millisecond})
		mustCreateUser(t, s, "alice", false)
		sec, meta, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(24*time.Hour))
		s.Verify(sec)
		// Poll the disk (not memory) until the background flush has written it.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if storedLastUse(t, s, meta.ID) != 0 {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("last use was not flushed to disk within 10s")
	})
}

func TestCountTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		_, p1, _ := mustToken(t, s, "alice", "a", Permanent, clock.Now().Add(2*time.Hour))
		mustToken(t, s, "alice", "b", Permanent, clock.Now().Add(time.Hour))
		_, t1, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		mustToken(t, s, "alice", "", Temporary, clock.Now().Add(3*time.Hour))
		check := func(tmp, perm int) {
			t.Helper()
			if n := s.Alerting().CountTokens(); n[Temporary] != tmp || n[Permanent] != perm {
				t.Fatalf("CountTokens = %v; want temporary %d, permanent %d", n, tmp, perm)
			}
		}
		check(2, 2)
		if err := s.Logout(ctx, t1.ID); err != nil {
			t.Fatal(err)
		}
		check(1, 2)
		clock.Advance(time.Hour)
		check(1, 1)
		if _, _, err := s.RotateToken(ctx, "alice", p1.ID, 30*time.Minute, clock.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		check(1, 2) // old one is still active during the grace period
		clock.Advance(30 * time.Minute)
		check(1, 1)
	})
}

// checkExpiryCopies checks that every permanent token record t/<id> has
// its expiry key holding an exact copy (what ForEachPermanentToken reads),
// and that no expiry key is left without its record.
func checkExpiryCopies(t *testing.T, s *Store, when string) {
	t.Helper()
	records := map[string][]byte{}
	copies := map[string][]byte{}
	rawView(t, s, func(r kv.Reader) error {
		if err := r.Scan(PrefixToken, kv.ScanOptions{}, func(_, val []byte) error {
			rec, _, err := DecodeTokenRecord(val)
			if err == nil && rec.Kind == Permanent {
				records[ExpiryKey(rec.ExpiresAt, rec.ID)] = bytes.Clone(val)
			}
			return err
		}); err != nil {
			return err
		}
		return r.Scan(PrefixExpiry, kv.ScanOptions{}, func(key, val []byte) error {
			copies[string(key)] = bytes.Clone(val)
			return nil
		})
	})
	for k, rec := range records {
		if c, ok := copies[k]; !ok || !bytes.Equal(c, rec) {
			t.Fatalf("%s: expiry key of %q holds %d bytes (present %v); want a copy of its %d-byte record", when, k[len(PrefixExpiry)+9:], len(c), ok, len(rec))
		}
	}
	if len(copies) != len(records) {
		t.Fatalf("%s: %d expiry keys for %d permanent records", when, len(copies), len(records))
	}
}

func TestExpiryIndexHoldsCopiesOfTokenRecords(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		_, a, _ := mustToken(t, s, "alice", "a", Permanent, clock.Now().Add(10*time.Hour))
		_, b, _ := mustToken(t, s, "alice", "b", Permanent, clock.Now().Add(20*time.Hour))
		mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		mustToken(t, s, "bob", "c", Permanent, clock.Now().Add(30*time.Hour))
		if _, _, err := s.CreateTokens(ctx, []NewToken{{User: "alice", Name: "bulk", Kind: Permanent, ExpiresAt: clock.Now().Add(5 * time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		checkExpiryCopies(t, s, "after create")
		_, rotated, err := s.RotateToken(ctx, "alice", a.ID, time.Hour, clock.Now().Add(40*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		checkExpiryCopies(t, s, "after rotate")
		// The walk shows the revocation the rotation scheduled.
		var seen []Token
		if err := s.Alerting().ForEachPermanentToken(ctx, func(tk Token) error { seen = append(seen, tk); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 5 || seen[1].ID != a.ID || seen[1].RevokedAt == nil || seen[1].RotatedTo != rotated.ID {
			t.Fatalf("walk after rotate = %+v; want a (2nd) revoked and rotated to %s", seen, rotated.ID)
		}
		if err := s.DeleteToken(ctx, "alice", b.ID); err != nil {
			t.Fatal(err)
		}
		checkExpiryCopies(t, s, "after delete")
		if err := s.DeleteUser(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		checkExpiryCopies(t, s, "after user delete")
	})
}

// After a reopen every token, used or not, in every range the loader
// splits the ids into, reports the last use flushed before in listings;
// the expiry walk reports none.
func TestLastUsedOfEveryTokenSurvivesReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		s := db.open(t, clock)
		mustCreateUser(t, s, "alice", false)
		batch := make([]NewToken, 300)
		for i := range batch {
			batch[i] = NewToken{User: "alice", Name: fmt.Sprintf("t%d", i), Kind: Permanent, ExpiresAt: clock.Now().Add(time.Duration(300-i) * time.Hour)}
		}
		secrets, metas, err := s.CreateTokens(ctxAs("root"), batch)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]time.Time{}
		for i, sec := range secrets {
			if i%3 != 0 {
				clock.Advance(time.Second)
				s.Verify(sec)
				want[metas[i].ID] = clock.Now()
			}
		}
		s.Close()
		s = db.open(t, clock)
		check := func(tk Token, how string) {
			w, used := want[tk.ID]
			switch {
			case used && (tk.LastUsedAt == nil || !tk.LastUsedAt.Equal(w)):
				t.Fatalf("%s after reopen: token %s last used %v; want %v", how, tk.ID, tk.LastUsedAt, w)
			case !used && tk.LastUsedAt != nil:
				t.Fatalf("%s after reopen: unused token %s last used %v", how, tk.ID, tk.LastUsedAt)
			}
		}
		listed, err := s.ListTokens(context.Background(), TokenFilter{})
		if err != nil || len(listed) != 300 {
			t.Fatalf("ListTokens = %d tokens, %v", len(listed), err)
		}
		for _, tk := range listed {
			check(tk, "ListTokens")
		}
		if err := s.Alerting().ForEachPermanentToken(context.Background(), func(tk Token) error {
			if tk.LastUsedAt != nil {
				t.Fatalf("the walk reports a last use for %s", tk.ID)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}
