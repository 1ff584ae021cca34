package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/admin/client"
	"github.com/apitokens/caddy-api-tokens/internal/apicontract"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
)

// newServer is the real admin API over a real Badger store, and a client
// of it whose every call is checked against the OpenAPI document.
func newServer(t *testing.T) (*client.Client, *testtools.FakeClock) {
	t.Helper()
	clock := testtools.NewFakeClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	db, err := badgerstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.Open(context.Background(), db, storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	store.SetScopes([]storage.Scope{{Name: "deploy", Description: "Trigger deployments"}, {Name: "reports:read", Description: "Read reports"}})
	if _, err := store.EnsureAdmin(context.Background(), storage.NewUser{Username: "root", Password: "root-password-1", Admin: true}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.New(admin.Config{Store: store, Clock: clock}))
	t.Cleanup(srv.Close)
	c := apicontract.MustNew(t, admin.OpenAPI(), apicontract.Options{})
	return &client.Client{BaseURL: srv.URL + "/", HTTP: c.Client(t, srv.Client())}, clock
}

// TestEveryCall calls each method of the client once against the real
// API; the contract check fails the test if a call or its answer strays
// from the document.
func TestEveryCall(t *testing.T) {
	c, clock := newServer(t)
	ctx := context.Background()
	s, err := c.Login(ctx, "root", "root-password-1")
	if err != nil || s.Kind != "temporary" || s.User.Username != "root" || !s.User.Admin {
		t.Fatalf("Login = %+v, %v", s, err)
	}
	c.Token = s.Secret
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	me, err := c.Me(ctx)
	must("Me", err)
	if me.Username != "root" {
		t.Errorf("Me = %+v", me)
	}
	u, err := c.CreateUser(ctx, client.NewUser{Username: "ci-bot", Email: "ci@example.com", Password: "ci-password-1", Scopes: []string{"deploy", "reports:read"}})
	must("CreateUser", err)
	if u.Username != "ci-bot" || u.Admin || !slices.Equal(u.Scopes, []string{"deploy", "reports:read"}) {
		t.Errorf("CreateUser = %+v", u)
	}
	scopes, err := c.ListScopes(ctx)
	must("ListScopes", err)
	if len(scopes) != 2 || scopes[0] != (client.Scope{Name: "deploy", Description: "Trigger deployments"}) {
		t.Errorf("ListScopes = %+v", scopes)
	}
	_, err = c.GetUser(ctx, "ci-bot")
	must("GetUser", err)
	users, err := c.ListUsers(ctx)
	must("ListUsers", err)
	if len(users) != 2 {
		t.Errorf("ListUsers = %+v", users)
	}
	email := "ci-team@example.com"
	u, err = c.UpdateUser(ctx, "ci-bot", client.UserChange{Email: &email})
	must("UpdateUser", err)
	if u.Email != email {
		t.Errorf("UpdateUser = %+v", u)
	}
	u, err = c.UpdateUser(ctx, "ci-bot", client.UserChange{Scopes: &[]string{"deploy"}})
	must("UpdateUser scopes", err)
	if !slices.Equal(u.Scopes, []string{"deploy"}) {
		t.Errorf("UpdateUser scopes = %+v", u)
	}
	u, err = c.UpdateUser(ctx, "ci-bot", client.UserChange{Scopes: new([]string)})
	must("UpdateUser no scopes", err)
	if len(u.Scopes) != 0 {
		t.Errorf("UpdateUser with a nil list of scopes = %+v; want none", u)
	}
	_, err = c.UpdateUser(ctx, "ci-bot", client.UserChange{Scopes: &[]string{"deploy", "reports:read"}})
	must("UpdateUser scopes back", err)
	scoped, err := c.LoginWithScopes(ctx, "ci-bot", "ci-password-1", []string{"deploy"})
	must("LoginWithScopes", err)
	if !slices.Equal(scoped.Scopes, []string{"deploy"}) {
		t.Errorf("LoginWithScopes = %+v", scoped)
	}
	if none, err := c.LoginWithScopes(ctx, "ci-bot", "ci-password-1", nil); err != nil || len(none.Scopes) != 0 {
		t.Errorf("LoginWithScopes(nil) = %+v, %v; want a session without scopes", none, err)
	}

	nt, err := c.CreateToken(ctx, "ci-bot", "github-actions", time.Time{})
	must("CreateToken", err)
	if !strings.HasPrefix(nt.Secret, "caddy_pat_") || nt.Name != "github-actions" || !nt.ExpiresAt.Equal(clock.Now().Add(365*24*time.Hour)) {
		t.Errorf("CreateToken = %+v", nt)
	}
	if !slices.Equal(nt.Scopes, []string{"deploy", "reports:read"}) || len(nt.AllowedCIDRs) != 0 {
		t.Errorf("CreateToken without scopes or networks = %+v; want the user's scopes, any network", nt)
	}
	short, err := c.CreateToken(ctx, "ci-bot", "short", clock.Now().Add(10*24*time.Hour))
	must("CreateToken with expiry", err)
	narrow, err := c.CreateTokenWith(ctx, "ci-bot", "narrow", client.TokenOptions{Scopes: &[]string{"deploy"}, AllowedCIDRs: []string{"10.0.0.0/8"}})
	must("CreateTokenWith", err)
	if !slices.Equal(narrow.Scopes, []string{"deploy"}) || !slices.Equal(narrow.AllowedCIDRs, []string{"10.0.0.0/8"}) {
		t.Errorf("CreateTokenWith = %+v", narrow)
	}
	none, err := c.CreateTokenWith(ctx, "ci-bot", "none", client.TokenOptions{Scopes: new([]string)})
	must("CreateTokenWith no scopes", err)
	if len(none.Scopes) != 0 {
		t.Errorf("CreateTokenWith a nil list of scopes = %+v; want none", none)
	}
	narrowed, err := c.UpdateToken(ctx, "ci-bot", narrow.ID, client.TokenChange{Scopes: new([]string), AllowedCIDRs: &[]string{"192.168.0.0/16"}})
	must("UpdateToken", err)
	if len(narrowed.Scopes) != 0 || !slices.Equal(narrowed.AllowedCIDRs, []string{"192.168.0.0/16"}) {
		t.Errorf("UpdateToken = %+v", narrowed)
	}
	narrowed, err = c.UpdateToken(ctx, "ci-bot", narrow.ID, client.TokenChange{AllowedCIDRs: new([]string)})
	must("UpdateToken to any network", err)
	if len(narrowed.AllowedCIDRs) != 0 {
		t.Errorf("UpdateToken to any network = %+v", narrowed)
	}
	_, err = c.UpdateToken(ctx, "ci-bot", none.ID, client.TokenChange{Scopes: &[]string{"deploy"}})
	if ae, ok := errors.AsType[*client.Error](err); !ok || ae.Status != 400 || !strings.Contains(ae.Message, "can only be removed") {
		t.Errorf("UpdateToken adding a scope = %v; want 400", err)
	}
	rot, err := c.RotateToken(ctx, "ci-bot", nt.ID, "1h")
	must("RotateToken", err)
	if rot.ID == nt.ID || rot.Secret == nt.Secret {
		t.Errorf("RotateToken = %+v", rot)
	}
	_, err = c.RotateToken(ctx, "ci-bot", short.ID, "")
	must("RotateToken without grace", err)
	toks, err := c.ListUserTokens(ctx, "ci-bot")
	must("ListUserTokens", err)
	if len(toks) != 8 { // 6 permanent, 2 login sessions
		t.Errorf("ListUserTokens = %d tokens", len(toks))
	}
	toks, err = c.ListTokens(ctx, client.TokenFilter{ExpiringWithin: "30d", Kind: "permanent"})
	must("ListTokens", err)
	for _, tk := range toks {
		if tk.Kind != "permanent" {
			t.Errorf("ListTokens kind filter let %+v through", tk)
		}
	}
	one, err := c.GetToken(ctx, "ci-bot", rot.ID)
	must("GetToken", err)
	if one.ID != rot.ID || one.Name != "github-actions" {
		t.Errorf("GetToken = %+v", one)
	}
	must("DeleteToken", c.DeleteToken(ctx, "ci-bot", rot.ID))

	set, err := c.PutSetting(ctx, "EnableUserTokenNotification", "7;30")
	must("PutSetting", err)
	if set.Value != "30;7" || set.Type != "AppConfig" {
		t.Errorf("PutSetting = %+v", set)
	}
	_, err = c.GetSetting(ctx, "EnableUserTokenNotification")
	must("GetSetting", err)
	settings, err := c.ListSettings(ctx)
	must("ListSettings", err)
	if len(settings) != 1 {
		t.Errorf("ListSettings = %+v", settings)
	}
	must("DeleteSetting", c.DeleteSetting(ctx, "EnableUserTokenNotification"))
	_, err = c.ListFaults(ctx)
	must("ListFaults", err)
	audit, err := c.ListAudit(ctx, 5)
	must("ListAudit", err)
	if len(audit) != 5 || audit[0].Action != "setting_delete" {
		t.Errorf("ListAudit = %+v", audit)
	}
	must("DeleteUser", c.DeleteUser(ctx, "ci-bot"))
	must("Logout", c.Logout(ctx))

	// Errors: the server's refusal with its status and message.
	_, err = c.Me(ctx)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(ae.Message, "invalid") {
		t.Errorf("Me after logout = %v; want a 401 *client.Error", err)
	}
	_, err = c.Login(ctx, "root", "wrong")
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Errorf("Login with a wrong password = %v", err)
	}
}

func TestErrors(t *testing.T) {
	c := &client.Client{BaseURL: "http://127.0.0.1:1/api-tokens", Token: "x"}
	_, err := c.Me(context.Background())
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "cannot reach http://127.0.0.1:1/api-tokens") {
		t.Errorf("unreachable = %v", err)
	}
	c.BaseURL = "localhost:8080"
	if _, err := c.Me(context.Background()); err == nil || !strings.Contains(err.Error(), "not an http://") {
		t.Errorf("bad URL = %v", err)
	}
	c.BaseURL, c.Token = "http://127.0.0.1:1", ""
	if _, err := c.Me(context.Background()); err == nil || !strings.Contains(err.Error(), "needs an API token") {
		t.Errorf("no token = %v", err)
	}
}

// TestListsFollowPages: the list calls follow the Link header from page
// to page, so they return whole lists of any length, and the iterators
// stop reading when the caller stops.
func TestListsFollowPages(t *testing.T) {
	c, clock := newServer(t)
	ctx := context.Background()
	s, err := c.Login(ctx, "root", "root-password-1")
	if err != nil {
		t.Fatal(err)
	}
	c.Token, c.PageSize = s.Secret, 2
	for _, u := range []string{"ann", "ben", "cat", "dan"} {
		if _, err := c.CreateUser(ctx, client.NewUser{Username: u, Password: "pw-" + u + "-long"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 7 {
		if _, err := c.CreateToken(ctx, "ben", fmt.Sprintf("ci-%d", i), clock.Now().Add(time.Duration(20+i*3)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	users, err := c.ListUsers(ctx)
	if err != nil || len(users) != 5 || users[0].Username != "ann" || users[4].Username != "root" {
		t.Errorf("ListUsers over pages of 2 = %+v, %v", users, err)
	}
	toks, err := c.ListUserTokens(ctx, "ben")
	if err != nil || len(toks) != 7 {
		t.Errorf("ListUserTokens over pages of 2 = %d tokens, %v", len(toks), err)
	}
	soon, err := c.ListTokens(ctx, client.TokenFilter{ExpiringWithin: "30d", Kind: "permanent"})
	if err != nil || len(soon) != 4 || !sort.SliceIsSorted(soon, func(i, j int) bool { return soon[i].ExpiresAt.Before(soon[j].ExpiresAt) }) {
		t.Errorf("ListTokens expiring within 30 days = %+v, %v; want 4, soonest first", soon, err)
	}
	audit, err := c.ListAudit(ctx, 9)
	if err != nil || len(audit) != 9 || audit[0].Action != "token_create" {
		t.Errorf("ListAudit(9) over pages = %d entries, %v", len(audit), err)
	}
	n := 0
	for tk, err := range c.Tokens(ctx, client.TokenFilter{}) {
		if err != nil || tk.ID == "" {
			t.Fatalf("Tokens: %+v, %v", tk, err)
		}
		if n++; n == 3 {
			break
		}
	}
	c.PageSize = 1001
	if _, err := c.ListUsers(ctx); err == nil || !strings.Contains(err.Error(), "page size") {
		t.Errorf("page size 1001 = %v", err)
	}
}

// TestNextPageOnAnotherServerRefused: the token goes with every page, so
// a Link that leads to another host is not followed.
func TestNextPageOnAnotherServerRefused(t *testing.T) {
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cursor") != "" {
			t.Errorf("the client followed the link to another server with %q", r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Link", `<http://attacker.example/users?cursor=x>; rel="next"`)
		_, _ = w.Write([]byte(`[{"username":"a","email":"","admin":false,"disabled":false,"created_at":"2030-01-02T03:04:05Z"}]`))
	}))
	defer hostile.Close()
	c := &client.Client{BaseURL: hostile.URL, Token: "caddy_tmp_x"}
	if _, err := c.ListUsers(context.Background()); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Errorf("ListUsers with a Link to another host = %v", err)
	}
}
