package storage_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestVerifyResults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)
		sec, _, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		good := secret.New(Permanent)
		last := "0"
		if good[len(good)-1] == '0' {
			last = "1"
		}
		bad := good[:len(good)-1] + last // right shape, wrong checksum
		cases := []struct {
			secret string
			want   verifier.Result
		}{
			{"", verifier.ResultMissing},
			{"Bearer xyz", verifier.ResultMalformed},
			{bad, verifier.ResultMalformed},
			{good, verifier.ResultUnknown},
			{sec, verifier.ResultOK},
		}
		for _, c := range cases {
			if id, r := s.Verify(c.secret); r != c.want || (r != verifier.ResultOK && id.Username != "") {
				t.Errorf("Verify(%q) = %+v, %v; want %v", c.secret, id, r, c.want)
			}
		}
		// Disable: the very next call sees it; enable again: works again.
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(sec); r != verifier.ResultDisabled {
			t.Fatalf("disabled user's token: %v", r)
		}
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(sec); r != verifier.ResultOK {
			t.Fatalf("re-enabled user's permanent token: %v", r)
		}
		// Promotion changes Admin on the next call.
		id, _ := s.Verify(sec)
		if id.Admin {
			t.Fatalf("before promotion: %+v", id)
		}
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Admin: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		id, _ = s.Verify(sec)
		if !id.Admin {
			t.Fatalf("after promotion: %+v", id)
		}
		clock.Advance(time.Hour)
		if _, r := s.Verify(sec); r != verifier.ResultExpired {
			t.Fatalf("expired token: %v", r)
		}
	})
}

func TestDisableEndsLoginSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		tmp, tm, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		perm, _, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(time.Hour))
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		if _, r := s.Verify(tmp); r != verifier.ResultUnknown {
			t.Fatalf("login token after disable and enable: %v; want it gone", r)
		}
		if _, err := s.GetToken(ctx, tm.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetToken(login token of disabled user) = %v", err)
		}
		if _, r := s.Verify(perm); r != verifier.ResultOK {
			t.Fatalf("permanent token after re-enable: %v", r)
		}
	})
}

// TestVerifyDuringChanges runs Verify on many goroutines while tokens are
// rotated, deleted and their user disabled, and checks the end state.
func TestVerifyDuringChanges(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		var secrets []string
		var ids []string
		for i := range 10 {
			sec, m, _ := mustToken(t, s, "alice", "t"+string(rune('a'+i)), Permanent, clock.Now().Add(time.Hour))
			secrets = append(secrets, sec)
			ids = append(ids, m.ID)
		}
		bobSec, _, _ := mustToken(t, s, "bob", "b", Permanent, clock.Now().Add(time.Hour))

		watched := append(slices.Clone(secrets), bobSec)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					for _, sec := range watched {
						if id, r := s.Verify(sec); r == verifier.ResultOK && id.Username == "" {
							t.Error("OK without a username")
						}
					}
				}
			})
		}
		var rotated []string
		for i, id := range ids {
			switch i % 2 {
			case 0:
				sec, _, err := s.RotateToken(ctx, "alice", id, 0, clock.Now().Add(2*time.Hour))
				if err != nil {
					t.Error(err)
				}
				rotated = append(rotated, sec)
			case 1:
				if err := s.DeleteToken(ctx, "alice", id); err != nil {
					t.Error(err)
				}
			}
		}
		if _, err := s.UpdateUser(ctx, "bob", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		for i, sec := range secrets {
			want := verifier.ResultRevoked
			if i%2 == 1 {
				want = verifier.ResultUnknown
			}
			if _, r := s.Verify(sec); r != want {
				t.Errorf("token %d: %v; want %v", i, r, want)
			}
		}
		for _, sec := range rotated {
			if _, r := s.Verify(sec); r != verifier.ResultOK {
				t.Errorf("rotated-in token: %v", r)
			}
		}
		if _, r := s.Verify(bobSec); r != verifier.ResultDisabled {
			t.Errorf("disabled bob: %v", r)
		}
		if n := s.Alerting().CountTokens(); n[Permanent] != 6 {
			t.Errorf("CountTokens = %v; want 6 active permanent: 5 rotated in, plus bob's (disabled users' tokens still count)", n)
		}
	})
}

func TestConcurrentCreateUserOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		results := make(chan error, 20)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				_, err := s.CreateUser(ctxAs("root"), NewUser{Username: "dup", Password: "x"})
				results <- err
			})
		}
		wg.Wait()
		close(results)
		countOutcomes(t, results)
	})
}

func TestConcurrentCreateTokenNameOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		results := make(chan error, 20)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				_, _, err := s.CreateToken(ctxAs("root"), NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
				results <- err
			})
		}
		wg.Wait()
		close(results)
		countOutcomes(t, results)
		if ts, _ := s.ListUserTokens(context.Background(), "alice"); len(ts) != 1 {
			t.Fatalf("%d tokens stored; want 1", len(ts))
		}
	})
}

func countOutcomes(t *testing.T, results chan error) {
	t.Helper()
	ok, conflict := 0, 0
	for err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrConflict):
			conflict++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || conflict != 19 {
		t.Fatalf("%d successes and %d conflicts; want 1 and 19", ok, conflict)
	}
}

// TestNoSecretsInAuditOrErrors drives every mutation and failure with
// known secrets and checks none of them, nor their hashes, leak.
func TestNoSecretsInAuditOrErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		const pw, pw2 = "Password-One-1", "Password-Two-2"
		mustCreateUser(t, s, "root", true)
		var errs []error
		collect := func(err error) {
			if err != nil {
				errs = append(errs, err)
			}
		}
		_, err := s.CreateUser(ctx, NewUser{Username: "alice", Email: "a@example.com", Password: pw})
		collect(err)
		_, err = s.CreateUser(ctx, NewUser{Username: "alice", Password: pw})
		collect(err)
		_, err = s.UpdateUser(ctx, "alice", UserPatch{Password: ptr(pw2)})
		collect(err)
		_, err = s.CheckPassword(ctx, "alice", pw)
		collect(err)
		_, err = s.CheckPassword(ctx, "nobody", pw)
		collect(err)
		sec, meta, err := s.CreateToken(ctx, NewToken{User: "alice", Name: "ci", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
		collect(err)
		tmp, tm, err := s.CreateToken(ctx, NewToken{User: "alice", Kind: Temporary, ExpiresAt: clock.Now().Add(time.Hour)})
		collect(err)
		rot, _, err := s.RotateToken(ctx, "alice", meta.ID, time.Minute, clock.Now().Add(time.Hour))
		collect(err)
		_, _, err = s.RotateToken(ctx, "alice", meta.ID, time.Minute, clock.Now().Add(time.Hour))
		collect(err)
		collect(s.Logout(ctx, tm.ID))
		collect(s.Logout(ctx, tm.ID))
		collect(s.DeleteToken(ctx, "root", meta.ID))
		collect(s.DeleteToken(ctx, "alice", meta.ID))

		forbidden := []string{pw, pw2, sec, tmp, rot}
		for _, x := range []string{sec, tmp, rot} {
			h := secret.HashOf(x)
			forbidden = append(forbidden, string(h[:]), hexString(h[:]))
		}
		audit, _ := s.ListAudit(ctx, 1000)
		if len(audit) < 7 {
			t.Fatalf("only %d audit entries", len(audit))
		}
		var texts []string
		for _, e := range audit {
			texts = append(texts, e.Actor+" "+e.Action+" "+e.Target+" "+e.Detail)
		}
		for _, e := range errs {
			texts = append(texts, e.Error())
		}
		if len(errs) < 5 {
			t.Fatalf("only %d errors collected: %v", len(errs), errs)
		}
		for _, text := range texts {
			for _, f := range forbidden {
				if strings.Contains(text, f) {
					t.Fatalf("secret material leaked in %q", text)
				}
			}
			if strings.Contains(text, "$2a$") {
				t.Fatalf("bcrypt hash leaked in %q", text)
			}
		}
	})
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestHugeInputIsNotFoundNotAServerError feeds lookups input far beyond
// Badger's key size limit: each must be a plain not-found (or bad login)
// with a short message, never an internal error.
func TestHugeInputIsNotFoundNotAServerError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "alice", false)
		huge := strings.Repeat("x", 100_000)
		checks := []struct {
			name   string
			err    error
			target error
		}{}
		add := func(name string, err, target error) {
			checks = append(checks, struct {
				name   string
				err    error
				target error
			}{name, err, target})
		}
		_, err := s.GetUser(ctx, huge)
		add("GetUser", err, ErrNotFound)
		_, err = s.UpdateUser(ctx, huge, UserPatch{Admin: ptr(true)})
		add("UpdateUser", err, ErrNotFound)
		add("DeleteUser", s.DeleteUser(ctx, huge), ErrNotFound)
		_, err = s.ListUserTokens(ctx, huge)
		add("ListUserTokens", err, ErrNotFound)
		_, err = s.CheckPassword(ctx, huge, "pw")
		add("CheckPassword", err, ErrBadLogin)
		_, _, err = s.CreateToken(ctx, NewToken{User: huge, Name: "x", Kind: Permanent, ExpiresAt: clock.Now().Add(time.Hour)})
		add("CreateToken", err, ErrNotFound)
		_, err = s.GetToken(ctx, huge)
		add("GetToken", err, ErrNotFound)
		add("DeleteToken", s.DeleteToken(ctx, "alice", huge), ErrNotFound)
		add("Logout", s.Logout(ctx, huge), ErrNotFound)
		_, _, err = s.RotateToken(ctx, "alice", huge, 0, clock.Now().Add(time.Hour))
		add("RotateToken", err, ErrNotFound)
		_, err = s.GetSetting(ctx, huge)
		add("GetSetting", err, ErrNotFound)
		add("DeleteSetting", s.DeleteSetting(ctx, huge), ErrNotFound)
		_, err = s.UpdateUser(ctx, "alice", UserPatch{Email: ptr(huge + "@example.com")})
		add("UpdateUser email", err, ErrInvalid)
		for _, c := range checks {
			if !errors.Is(c.err, c.target) || len(c.err.Error()) > 200 {
				t.Errorf("%s with huge input = %.300v; want a short %v", c.name, c.err, c.target)
			}
		}
		if _, found, err := s.GetAlertState(ctx, huge); found || err != nil {
			t.Errorf("GetAlertState(huge) = %v, %v", found, err)
		}
		if err := s.Alerting().PutAlertStates(ctx, alertLease(t, s), map[string]AlertState{huge: {NotifiedDays: 1}}); err != nil {
			t.Errorf("PutAlertStates(huge id) = %v", err)
		}
	})
}
