package storage_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

func TestCreateAndGetUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := ctxAs("root")
		u, err := s.CreateUser(ctx, NewUser{Username: "alice", Email: "alice@example.com", Password: "s3cret", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		want := User{Username: "alice", Email: "alice@example.com", Admin: true, CreatedAt: t0, Scopes: []string{}}
		if !reflect.DeepEqual(u, want) {
			t.Fatalf("CreateUser = %+v; want %+v", u, want)
		}
		got, err := s.GetUser(ctx, "alice")
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("GetUser = %+v, %v; want %+v", got, err, want)
		}
		_, err = s.CreateUser(ctx, NewUser{Username: "alice", Password: "x"})
		wantErr(t, err, ErrConflict, `user "alice" already exists`)
		_, err = s.GetUser(ctx, "bob")
		wantErr(t, err, ErrNotFound, `"bob"`)
	})
}

func TestCreateUserValidation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		cases := []struct {
			u        NewUser
			mentions string
		}{
			{NewUser{Username: "", Password: "x"}, "1 to 64"},
			{NewUser{Username: strings.Repeat("a", 65), Password: "x"}, "1 to 64"},
			{NewUser{Username: "Alice", Password: "x"}, "lowercase"},
			{NewUser{Username: "-alice", Password: "x"}, "start with"},
			{NewUser{Username: ".alice", Password: "x"}, "start with"},
			{NewUser{Username: "al/ice", Password: "x"}, "may only contain"},
			{NewUser{Username: "al ice", Password: "x"}, "may only contain"},
			{NewUser{Username: "alice", Email: "not an email", Password: "x"}, "plain address"},
			{NewUser{Username: "alice", Email: "Alice <alice@example.com>", Password: "x"}, "plain address"},
			{NewUser{Username: "alice", Password: ""}, "password must not be empty"},
			{NewUser{Username: "alice", Password: strings.Repeat("p", 73)}, "at most 72 bytes"},
		}
		for _, c := range cases {
			_, err := s.CreateUser(ctxAs("root"), c.u)
			wantErr(t, err, ErrInvalid, c.mentions)
		}
		users, _ := s.ListUsers(context.Background())
		if len(users) != 0 {
			t.Fatalf("invalid input created users: %+v", users)
		}
		for _, ok := range []string{"a", "0", "a.b_c-d", strings.Repeat("z", 64)} {
			if _, err := s.CreateUser(ctxAs("root"), NewUser{Username: ok, Password: strings.Repeat("p", 72)}); err != nil {
				t.Errorf("CreateUser(%q): %v", ok, err)
			}
		}
	})
}

func TestListUsersSorted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		users, err := s.ListUsers(context.Background())
		if err != nil || users == nil || len(users) != 0 {
			t.Fatalf("empty ListUsers = %#v, %v; want empty non-nil list", users, err)
		}
		for _, n := range []string{"carol", "alice", "bob"} {
			mustCreateUser(t, s, n, false)
		}
		users, err = s.ListUsers(context.Background())
		if err != nil || len(users) != 3 || users[0].Username != "alice" || users[2].Username != "carol" {
			t.Fatalf("ListUsers = %+v, %v", users, err)
		}
	})
}

func TestCheckPassword(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		u, err := s.CheckPassword(ctx, "alice", "pw-alice")
		if err != nil || u.Username != "alice" {
			t.Fatalf("CheckPassword(right) = %+v, %v", u, err)
		}
		for _, c := range []struct{ user, pw string }{{"alice", "wrong"}, {"alice", ""}, {"nobody", "pw-alice"}} {
			_, err := s.CheckPassword(ctx, c.user, c.pw)
			wantErr(t, err, ErrBadLogin, "wrong username or password")
		}
		// bcrypt reads only 72 bytes: a longer guess sharing them must still fail.
		long := strings.Repeat("p", 72)
		if _, err := s.CreateUser(ctx, NewUser{Username: "max", Password: long}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CheckPassword(ctx, "max", long); err != nil {
			t.Fatalf("72-byte password rejected: %v", err)
		}
		_, err = s.CheckPassword(ctx, "max", long+"-and-more")
		wantErr(t, err, ErrBadLogin, "wrong username or password")

		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		_, err = s.CheckPassword(ctx, "alice", "pw-alice")
		wantErr(t, err, ErrBadLogin, "wrong username or password")
	})
}

func TestPasswordStoredAsBcrypt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		var hash []byte
		rawView(t, s, func(r kv.Reader) error {
			val, _, err := r.Get(UserKey("alice"))
			if err == nil {
				_, hash, err = DecodeUserRecord(val)
			}
			return err
		})
		if err := bcrypt.CompareHashAndPassword(hash, []byte("pw-alice")); err != nil {
			t.Fatalf("stored hash is not a bcrypt hash of the password: %v", err)
		}
		if strings.Contains(string(hash), "pw-alice") {
			t.Fatal("password stored in clear")
		}
	})
}

func TestUpdateUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)
		u, err := s.UpdateUser(ctx, "alice", UserPatch{Email: ptr("a2@example.com"), Password: ptr("new-pw"), Admin: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if u.Email != "a2@example.com" || !u.Admin || u.Disabled {
			t.Fatalf("UpdateUser = %+v", u)
		}
		if got, _ := s.GetUser(ctx, "alice"); !reflect.DeepEqual(got, u) {
			t.Fatalf("GetUser after update = %+v; want %+v", got, u)
		}
		if _, err := s.CheckPassword(ctx, "alice", "new-pw"); err != nil {
			t.Fatalf("new password rejected: %v", err)
		}
		if _, err := s.CheckPassword(ctx, "alice", "pw-alice"); !errors.Is(err, ErrBadLogin) {
			t.Fatalf("old password still accepted: %v", err)
		}
		audit, _ := s.ListAudit(ctx, 1)
		if audit[0].Action != ActionUserUpdate || audit[0].Target != "alice" || audit[0].Detail != "changed email, password, admin=true, login sessions ended" {
			t.Fatalf("audit = %+v", audit[0])
		}

		_, err = s.UpdateUser(ctx, "bob", UserPatch{Admin: ptr(true)})
		wantErr(t, err, ErrNotFound, `"bob"`)
		_, err = s.UpdateUser(ctx, "alice", UserPatch{Email: ptr("bad")})
		wantErr(t, err, ErrInvalid, "plain address")
		_, err = s.UpdateUser(ctx, "alice", UserPatch{Password: ptr("")})
		wantErr(t, err, ErrInvalid, "password")
		if got, _ := s.GetUser(ctx, "alice"); !reflect.DeepEqual(got, u) {
			t.Fatalf("rejected update changed the user: %+v", got)
		}
	})
}

func TestLastAdminIsProtected(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)

		wantErr(t, s.DeleteUser(ctx, "root"), ErrLastAdmin, "make another user admin first")
		_, err := s.UpdateUser(ctx, "root", UserPatch{Admin: ptr(false)})
		wantErr(t, err, ErrLastAdmin, "last admin")
		_, err = s.UpdateUser(ctx, "root", UserPatch{Disabled: ptr(true)})
		wantErr(t, err, ErrLastAdmin, "last admin")
		if u, _ := s.GetUser(ctx, "root"); !u.Admin || u.Disabled {
			t.Fatalf("refused change was applied: %+v", u)
		}
		// Non-admin changes to the last admin still work.
		if _, err := s.UpdateUser(ctx, "root", UserPatch{Email: ptr("r@example.com")}); err != nil {
			t.Fatal(err)
		}
		// With a second admin, the first can go.
		if _, err := s.UpdateUser(ctx, "alice", UserPatch{Admin: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, "root"); err != nil {
			t.Fatalf("DeleteUser with another admin: %v", err)
		}
		// A disabled admin does not count as the remaining admin.
		mustCreateUser(t, s, "bob", true)
		if _, err := s.UpdateUser(ctx, "bob", UserPatch{Disabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		_, err = s.UpdateUser(ctx, "alice", UserPatch{Admin: ptr(false)})
		wantErr(t, err, ErrLastAdmin, "last admin")
	})
}

func TestEnsureAdmin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		ctx := context.Background()
		created, err := s.EnsureAdmin(ctx, NewUser{Username: "admin", Password: "boot"})
		if err != nil || !created {
			t.Fatalf("EnsureAdmin on empty store = %v, %v", created, err)
		}
		if u, _ := s.GetUser(ctx, "admin"); !u.Admin {
			t.Fatalf("bootstrap user is not admin: %+v", u)
		}
		created, err = s.EnsureAdmin(ctx, NewUser{Username: "other", Password: "boot"})
		if err != nil || created {
			t.Fatalf("EnsureAdmin with an admin present = %v, %v", created, err)
		}
		if _, err := s.GetUser(ctx, "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("EnsureAdmin created a second admin: %v", err)
		}
		_, err = s.EnsureAdmin(ctx, NewUser{Username: "Bad Name", Password: "x"})
		wantErr(t, err, ErrInvalid, "username")
	})
}

func TestEnsureAdminWhenNameTakenByNonAdmin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		mustCreateUser(t, s, "admin", false)
		created, err := s.EnsureAdmin(context.Background(), NewUser{Username: "admin", Password: "x"})
		if created {
			t.Fatal("EnsureAdmin claims to have created an existing user")
		}
		wantErr(t, err, ErrConflict, "already exists")
	})
}

func TestDeleteUserDeletesTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		mustCreateUser(t, s, "root", true)
		mustCreateUser(t, s, "alice", false)
		perm, pm, _ := mustToken(t, s, "alice", "ci", Permanent, clock.Now().Add(24*time.Hour))
		tmp, _, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
		if err := s.Alerting().PutAlertStates(ctx, alertLease(t, s), map[string]AlertState{pm.ID: {NotifiedDays: 7}}); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		for _, sec := range []string{perm, tmp} {
			if _, r := s.Verify(sec); r != verifier.ResultUnknown {
				t.Fatalf("token of deleted user verifies as %v", r)
			}
		}
		if _, err := s.GetToken(ctx, pm.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetToken after DeleteUser: %v", err)
		}
		if _, found, _ := s.GetAlertState(ctx, pm.ID); found {
			t.Fatal("alert state outlived its token")
		}
		if n := s.Alerting().CountTokens(); n[Permanent] != 0 || n[Temporary] != 0 {
			t.Fatalf("CountTokens after DeleteUser = %v", n)
		}
		wantErr(t, s.DeleteUser(ctx, "alice"), ErrNotFound, `"alice"`)
		// The name can be reused and starts with no tokens.
		mustCreateUser(t, s, "alice", false)
		if ts, _ := s.ListUserTokens(ctx, "alice"); len(ts) != 0 {
			t.Fatalf("recreated user inherits tokens: %+v", ts)
		}
		a, _ := s.ListAudit(ctx, 2)
		if a[1].Action != ActionUserDelete || a[1].Detail != "2 tokens deleted" {
			t.Fatalf("audit = %+v", a[1])
		}
	})
}
