package storage_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/throttle"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// copyWorld is what a migration must carry over: users with passwords,
// permanent and login tokens (used, rotated), settings, an alert state
// and the audit log.
type copyWorld struct {
	perm, session, rotatedOld, rotatedNew string
	permID                                string
	audit                                 []AuditEntry
	scoped                                Token // with scopes, allowed networks and their use
}

func fillForCopy(t *testing.T, s *Store, clock *testtools.FakeClock) copyWorld {
	t.Helper()
	ctx := ctxAs("root")
	mustCreateUser(t, s, "root", true)
	mustCreateUser(t, s, "alice", false)
	s.SetScopes(catalogue)
	if _, err := s.UpdateUser(ctx, "alice", UserPatch{Scopes: &[]string{"deploy", "reports:read"}}); err != nil {
		t.Fatal(err)
	}
	var w copyWorld
	var tk Token
	w.perm, tk, _ = mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(30*24*time.Hour))
	w.permID = tk.ID
	w.session, _, _ = mustToken(t, s, "alice", "", Temporary, clock.Now().Add(12*time.Hour))
	mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Minute)) // expires before the copy
	var rot Token
	w.rotatedOld, rot, _ = mustToken(t, s, "alice", "deploy", Permanent, clock.Now().Add(24*time.Hour))
	var err error
	if w.rotatedNew, _, err = s.RotateToken(ctx, "alice", rot.ID, 2*time.Hour, clock.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(ctx, SettingNotificationDays, "30;7"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSetting(ctx, SettingNotificationEmails, "ops@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.Alerting().PutAlertStates(context.Background(), alertLease(t, s), map[string]AlertState{tk.ID: {NotifiedDays: 30, RaisedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	tryLogin(t, s, "alice", "198.51.100.1", throttle.Failed) // throttle keys, with their TTLs
	clock.Advance(time.Minute)
	s.Verify(w.perm) // a last use, flushed at Close
	scopedSecret, scoped, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "scoped", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour),
		Scopes: []string{"deploy"}, AllowedCIDRs: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	deploy, _ := s.Verifier().Policy([]string{"deploy"}, []string{"deploy", "reports:read", "reports:write"}, false, false)
	if _, r := s.Verifier().VerifyFrom(scopedSecret, &deploy, netip.MustParseAddr("192.0.2.9")); r != verifier.ResultOK {
		t.Fatal(r)
	}
	s.FlushLastUsed()
	if w.scoped, err = s.GetUserToken(ctx, "alice", scoped.ID); err != nil || w.scoped.LastUsedIP == "" || w.scoped.ScopeUsage["deploy"].LastNeededAt == nil {
		t.Fatalf("the scoped token before the copy: %+v, %v", w.scoped, err)
	}
	if w.audit, err = s.ListAudit(context.Background(), 1000); err != nil {
		t.Fatal(err)
	}
	return w
}

// checkCopy checks a store opened on a copy: every token works as it did,
// every password, setting, alert state and audit entry is there.
func checkCopy(t *testing.T, s *Store, w copyWorld, when string) {
	t.Helper()
	throttleKeys := 0
	rawView(t, s, func(r kv.Reader) error {
		return r.(kv.ExpiryScanner).ScanExpiry("lt/", kv.ScanOptions{KeysOnly: true}, func(key, _ []byte, at time.Time) error {
			throttleKeys++
			if at.IsZero() {
				t.Errorf("%s: the throttle key %q lost its TTL", when, key)
			}
			return nil
		})
	})
	if throttleKeys == 0 {
		t.Errorf("%s: no login throttle key", when)
	}
	ctx := context.Background()
	for _, c := range []struct {
		secret string
		want   verifier.Result
	}{{w.perm, verifier.ResultOK}, {w.session, verifier.ResultOK}, {w.rotatedOld, verifier.ResultOK}, {w.rotatedNew, verifier.ResultOK}} {
		if _, r := s.Verify(c.secret); r != c.want {
			t.Errorf("%s: a token verifies as %v, want %v", when, r, c.want)
		}
	}
	for user, pw := range map[string]string{"root": "pw-root", "alice": "pw-alice"} {
		if _, err := s.CheckPassword(ctx, user, pw); err != nil {
			t.Errorf("%s: %s's password: %v", when, user, err)
		}
	}
	if v, err := s.GetSetting(ctx, SettingNotificationDays); err != nil || v != "30;7" {
		t.Errorf("%s: setting = %q, %v", when, v, err)
	}
	if st, found, err := s.GetAlertState(ctx, w.permID); err != nil || !found || st.NotifiedDays != 30 {
		t.Errorf("%s: alert state = %+v, %v, %v", when, st, found, err)
	}
	if tk, err := s.GetToken(ctx, w.permID); err != nil || tk.LastUsedAt == nil {
		t.Errorf("%s: the permanent token lost its last use: %+v, %v", when, tk, err)
	}
	scoped, err := s.GetUserToken(ctx, "alice", w.scoped.ID)
	if err != nil || !slices.Equal(scoped.Scopes, []string{"deploy"}) || !slices.Equal(scoped.AllowedCIDRs, []string{"192.0.2.0/24"}) ||
		scoped.LastUsedIP != "192.0.2.9" || !reflect.DeepEqual(scoped.ScopeUsage, w.scoped.ScopeUsage) {
		t.Errorf("%s: the scoped token is %+v (%v), was %+v", when, scoped, err, w.scoped)
	}
	if u, err := s.GetUser(ctx, "alice"); err != nil || !slices.Equal(u.Scopes, []string{"deploy", "reports:read"}) {
		t.Errorf("%s: alice's scopes %v, %v", when, u.Scopes, err)
	}
	audit, err := s.ListAudit(ctx, 1000)
	if err != nil || len(audit) != len(w.audit) || audit[0] != w.audit[0] || audit[len(audit)-1] != w.audit[len(w.audit)-1] {
		t.Errorf("%s: audit has %d entries (%v), want the %d of the source", when, len(audit), err, len(w.audit))
	}
	if n := s.Alerting().CountTokens(); n[Permanent] != 4 || n[Temporary] != 1 {
		t.Errorf("%s: tokens %v; want 4 permanent and the live session", when, n)
	}
	// Names are still unique: the copied name index holds.
	if _, _, err := s.CreateToken(ctxAs("root"), NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: t0.Add(time.Hour)}); !errors.Is(err, ErrConflict) {
		t.Errorf("%s: a duplicate name was accepted after the copy: %v", when, err)
	}
}

// A store copied into an empty database of the other backend, and back,
// keeps every token working and every record; a copy into a database that
// is not empty is refused.
func TestCopyRoundTripBetweenBackends(t *testing.T) {
	for _, pair := range [][2]string{{"badger", "postgres"}, {"postgres", "badger"}} {
		t.Run(pair[0]+"→"+pair[1]+"→"+pair[0], func(t *testing.T) {
			clock := testtools.NewFakeClock(t0)
			src := newTestDB(t, pair[0])
			s := src.open(t, clock)
			w := fillForCopy(t, s, clock)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute) // the short session has expired

			there := newTestDB(t, pair[1])
			copyBetween(t, there, src, clock)
			s = there.open(t, clock)
			checkCopy(t, s, w, "after the copy to "+pair[1])
			s.Close()

			back := newTestDB(t, pair[0])
			copyBetween(t, back, there, clock)
			s = back.open(t, clock)
			checkCopy(t, s, w, "after the copy back")
			s.Close()

			dstBackend := back.backend(t, nil)
			defer dstBackend.Close()
			srcBackend := there.backend(t, nil)
			defer srcBackend.Close()
			if _, err := Copy(context.Background(), dstBackend, srcBackend, clock.Now()); !errors.Is(err, ErrNotEmpty) {
				t.Fatalf("a copy into a database with data = %v; want ErrNotEmpty", err)
			}
		})
	}
}

// copyBetween copies the database src into dst with closed stores on
// both, as the command does.
func copyBetween(t *testing.T, dst, src *testDB, clock Clock) {
	t.Helper()
	d, s := dst.backend(t, nil), src.backend(t, nil)
	counts, err := Copy(context.Background(), d, s, clock.Now())
	d.Close()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if counts.Users != 2 || counts.Tokens != 5 {
		t.Fatalf("copied %+v; want 2 users and 5 tokens", counts)
	}
}
