package ui_test

// Browser tests: each clicks through one flow of the seed in headless
// Chromium against the real admin API over a real Badger store, mounted
// under a prefix as Caddy's `handle_path /api-tokens/*` does, and checks
// what a person sees on the page and what the server then holds.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/admin/ui"
	"github.com/apitokens/caddy-api-tokens/alerts"
	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/badgerstore"
	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// The fake clock starts here, so the dates on the page are known.
var start = time.Date(2026, 1, 15, 9, 30, 0, 0, time.UTC)

const (
	prefix        = "/api-tokens"
	adminName     = "admin"
	adminPassword = "admin-password-1"
)

// testEnv is the real admin handler with the UI, the real alert loop and a
// Badger store on a fake clock, served over loopback HTTP.
type testEnv struct {
	srv    *httptest.Server
	store  *storage.Store
	clock  *testtools.FakeClock
	shared *alerts.Shared
}

// newEnv starts a test environment; options may change how its store is
// opened.
func newEnv(t *testing.T, options ...func(*storage.Options)) *testEnv {
	t.Helper()
	clock := testtools.NewFakeClock(start)
	db, err := badgerstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	// Last uses reach storage (with their address and scopes) only when
	// a test asks for it: a flush in the middle of another test would
	// change what its rows show.
	opts := storage.Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour}
	for _, o := range options {
		o(&opts)
	}
	store, err := storage.Open(context.Background(), db, opts)
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.EnsureAdmin(context.Background(), storage.NewUser{
		Username: adminName, Email: "admin@example.com", Password: adminPassword, Admin: true,
	}); err != nil {
		t.Fatalf("EnsureAdmin: %v", err)
	}

	shared, err := alerts.NewShared(context.Background(), store.Alerting())
	if err != nil {
		t.Fatal(err)
	}
	loop := alerts.NewLoop(alerts.Config{Clock: clock, Shared: shared})
	handler := admin.New(admin.Config{
		Store:  store,
		Clock:  clock,
		UI:     ui.Handler(),
		Faults: shared.Faults,
	})
	// The app triggers the loop when a setting changes; here the pass runs
	// before a settings change answers, so the Faults page is current as
	// soon as the form closes.
	passAfterSettings := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, r)
		if strings.HasPrefix(r.URL.Path, "/settings/") && r.Method != http.MethodGet && rec.Code < 300 {
			if err := loop.RunOnce(context.Background()); err != nil {
				t.Errorf("alert pass: %v", err)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		// The page reads the server's time from the Date header (for
		// "unused for 30 days"); this server's clock is the fake one.
		w.Header().Set("Date", clock.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", http.StripPrefix(prefix, passAfterSettings))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testEnv{srv: srv, store: store, clock: clock, shared: shared}
}

func (e *testEnv) url(path string) string { return e.srv.URL + prefix + path }

func (e *testEnv) addUser(t *testing.T, name, password string, isAdmin bool) {
	t.Helper()
	_, err := e.store.CreateUser(context.Background(), storage.NewUser{
		Username: name, Email: name + "@example.com", Password: password, Admin: isAdmin,
	})
	if err != nil {
		t.Fatalf("CreateUser %s: %v", name, err)
	}
}

func (e *testEnv) addToken(t *testing.T, user, name string, expires time.Time) storage.Token {
	t.Helper()
	_, tok, err := e.store.CreateToken(context.Background(), storage.NewToken{
		User: user, Name: name, Kind: storage.Permanent, ExpiresAt: expires, CreatedBy: adminName,
	})
	if err != nil {
		t.Fatalf("CreateToken %s/%s: %v", user, name, err)
	}
	return tok
}

// whoIs asks the API who a bearer token belongs to: the username, or "" with
// the status when the token is refused.
func (e *testEnv) whoIs(t *testing.T, sec string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url("/me"), nil)
	req.Header.Set("Authorization", "Bearer "+sec)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET /me: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", res.StatusCode
	}
	var u storage.User
	if err := json.NewDecoder(res.Body).Decode(&u); err != nil {
		t.Fatalf("GET /me: %v", err)
	}
	return u.Username, res.StatusCode
}

// utc formats a time as the page shows it.
func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") + " UTC" }

// login fills in the login form and waits for the first page.
func (p *page) login(user, password, firstHeading string) {
	p.t.Helper()
	p.find("heading", "Log in")
	p.fill("Username", user)
	p.fill("Password", password)
	p.click("button", "Log in")
	p.find("heading", firstHeading)
}

func TestBrowserLoginAndLogout(t *testing.T) {
	env := newEnv(t)
	p := openPage(t, env)

	p.find("heading", "Log in")
	p.absent("navigation", "Main")
	p.fill("Username", adminName)
	p.fill("Password", "not-the-password")
	p.click("button", "Log in")
	p.waitText("#login-error", "invalid username or password")
	if tok := p.sessionToken(); tok != "" {
		t.Fatalf("a failed login stored a token")
	}

	// Enter submits, as in any form.
	p.fill("Password", adminPassword)
	p.keys(kb.Enter)
	p.find("heading", "Users")
	if got := p.text("#whoami"); got != "admin (administrator)" {
		t.Errorf("signed-in user shows %q", got)
	}
	for _, link := range []string{"Users", "System Settings", "Faults", "My profile"} {
		p.find("link", link)
	}

	token := p.sessionToken()
	if user, status := env.whoIs(t, token); user != adminName {
		t.Fatalf("the token kept in sessionStorage does not work: %d", status)
	}

	// The session survives a reload of the tab (sessionStorage) ...
	p.do(chromedp.Reload())
	p.find("heading", "Users")

	// ... and when it ends, logging in again returns to the page asked for.
	env.clock.Advance(admin.DefaultSessionTTL)
	p.click("link", "System Settings")
	p.find("heading", "Log in")
	p.waitText("#page-status", "Your session has ended: token is expired. Please log in again.")
	p.fill("Username", adminName)
	p.fill("Password", adminPassword)
	p.click("button", "Log in")
	p.find("heading", "System Settings")
	token = p.sessionToken()

	// ... and logging out ends it on the server, not only in the page.
	p.click("button", "Log out")
	p.find("heading", "Log in")
	p.waitText("#page-status", "You are logged out.")
	p.absent("button", "Log out")
	if tok := p.sessionToken(); tok != "" {
		t.Errorf("token still in sessionStorage after logout")
	}
	if _, status := env.whoIs(t, token); status != http.StatusUnauthorized {
		t.Errorf("the logged-out token answers %d, want 401", status)
	}
}

func TestBrowserUsersAddDisableDelete(t *testing.T) {
	env := newEnv(t)
	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")
	created := utc(start)
	p.waitRows("users-body", [][]string{{"admin", "admin@example.com", "Administrator", "Active", created, "you"}})

	add := func(name, email, password string, admin bool) {
		p.click("button", "Add")
		p.find("dialog", "Add user")
		p.fill("Username", name)
		p.fill("Email", email)
		p.fill("Password", password)
		if admin {
			p.click("checkbox", "Administrator")
		}
		p.click("button", "Create")
	}
	add("ci-bot", "ci@example.com", "ci-password-1", false)
	p.waitText("#page-status", "User ci-bot created.")
	add("bob", "bob@example.com", "bob-password-1", true)
	p.waitText("#page-status", "User bob created.")
	p.waitRows("users-body", [][]string{
		{"admin", "admin@example.com", "Administrator", "Active", created, "you"},
		{"bob", "bob@example.com", "Administrator", "Active", created, "Disable Delete"},
		{"ci-bot", "ci@example.com", "User", "Active", created, "Disable Delete"},
	})
	if u, err := env.store.GetUser(context.Background(), "bob"); err != nil || !u.Admin || u.Email != "bob@example.com" {
		t.Fatalf("stored bob = %+v, %v", u, err)
	}
	if _, err := env.store.CheckPassword(context.Background(), "ci-bot", "ci-password-1"); err != nil {
		t.Fatalf("ci-bot cannot log in with the password typed in the form: %v", err)
	}

	// A name that exists: the server's 409 message shows in the dialog,
	// which stays open; Escape closes it.
	add("bob", "", "another-password", false)
	p.waitText("#dlg-user [role=alert]", `user "bob" already exists`)
	p.find("dialog", "Add user")
	p.keys(kb.Escape)
	p.gone("dialog", "Add user")

	p.click("button", "Disable ci-bot")
	p.waitText("#page-status", "User ci-bot disabled: their tokens stop working.")
	p.find("button", "Enable ci-bot")
	if u, _ := env.store.GetUser(context.Background(), "ci-bot"); !u.Disabled {
		t.Errorf("ci-bot is not disabled in the store")
	}
	p.waitRows("users-body", [][]string{
		{"admin", "admin@example.com", "Administrator", "Active", created, "you"},
		{"bob", "bob@example.com", "Administrator", "Active", created, "Disable Delete"},
		{"ci-bot", "ci@example.com", "User", "Disabled", created, "Enable Delete"},
	})
	p.screenshot("users.png")

	// Delete asks first; Cancel keeps the user.
	p.click("button", "Delete bob")
	p.find("dialog", "Delete user bob? All their tokens stop working at once.")
	p.click("button", "Cancel")
	p.gone("dialog", "Delete user bob? All their tokens stop working at once.")
	p.click("button", "Delete bob")
	p.click("button", "Delete")
	p.waitText("#page-status", "User bob deleted.")
	p.gone("link", "bob")
	if _, err := env.store.GetUser(context.Background(), "bob"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("bob after Delete: %v, want not found", err)
	}
}

func TestBrowserTokensCreateCopyRotateRevoke(t *testing.T) {
	env := newEnv(t)
	env.addUser(t, "ci", "ci-password-1", false)
	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")

	// The seed's path: Users -> the username -> the Tokens tab -> + Add.
	p.click("link", "ci")
	p.find("heading", "ci")
	p.click("tab", "Tokens")
	if !p.hasState("tab", "Tokens", "selected") {
		t.Fatal("the Tokens tab is not selected after clicking it")
	}
	p.waitRows("tokens-body", [][]string{{"No tokens yet."}})
	p.click("button", "Add")
	p.find("dialog", "Add token")
	p.fill("Name", "deploy-pipeline")
	p.click("button", "Create")

	// The secret is shown once, with Copy and the warning.
	p.find("dialog", "Token deploy-pipeline created")
	warning := p.text("#secret-warning")
	if !strings.Contains(warning, "You will not be able to retrieve it again") {
		t.Errorf("warning reads %q", warning)
	}
	sec := p.value("textbox", "Token")
	if !strings.HasPrefix(sec, secret.PermanentPrefix) {
		t.Fatalf("shown secret %q is not a permanent token", sec)
	}
	p.click("button", "Copy")
	p.waitText("#secret-status", "Copied to the clipboard.")
	if got := eval[string](p, `navigator.clipboard.readText()`); got != sec {
		t.Errorf("clipboard holds %q, want the shown secret", got)
	}
	if user, status := env.whoIs(t, sec); user != "ci" {
		t.Fatalf("the shown secret does not authenticate as ci: %d", status)
	}
	p.screenshot("token-created.png")
	p.click("button", "Done")
	p.gone("dialog", "Token deploy-pipeline created")
	p.waitFor("the secret to leave the page once its dialog closed", func() bool {
		return eval[string](p, `document.getElementById('secret-value').value`) == ""
	})

	expires := start.Add(admin.DefaultPermanentTokenLifetime)
	p.waitRows("tokens-body", [][]string{
		{"deploy-pipeline", "Permanent", "none", "any Edit", utc(start), utc(expires), "Never", "Active", "Rotate Revoke"},
	})

	// Rotate an hour later: a new secret with a fresh expiry; the old one
	// keeps working for the grace period chosen in the form.
	env.clock.Advance(time.Hour)
	rotatedAt := start.Add(time.Hour)
	p.click("button", "Rotate deploy-pipeline")
	p.find("dialog", "Rotate token")
	if got := p.value("combobox", "Old token keeps working for"); got != "1 hour" {
		t.Errorf("default grace shows %q, want 1 hour", got)
	}
	p.click("button", "Rotate")
	p.find("dialog", "Token deploy-pipeline rotated")
	rotated := p.value("textbox", "Token")
	if rotated == sec || !strings.HasPrefix(rotated, secret.PermanentPrefix) {
		t.Fatalf("rotation showed %q", rotated)
	}
	p.click("button", "Done")
	for _, s := range []string{sec, rotated} {
		if user, status := env.whoIs(t, s); user != "ci" {
			t.Errorf("during the grace period a secret is refused: %d", status)
		}
	}
	newExpires := rotatedAt.Add(admin.DefaultPermanentTokenLifetime)
	p.waitRows("tokens-body", sortedRows([][]string{
		// Last used: the check of the first secret above, at the start.
		{"deploy-pipeline", "Permanent", "none", "any", utc(start), utc(expires), utc(start), "Active until " + utc(rotatedAt.Add(time.Hour)), "Revoke"},
		{"deploy-pipeline", "Permanent", "none", "any Edit", utc(rotatedAt), utc(newExpires), "Never", "Active", "Rotate Revoke"},
	}, p.rows("tokens-body")))

	// Revoke is DELETE: the row goes and the secret stops working at once.
	p.click("button", "Revoke deploy-pipeline, expires "+utc(newExpires))
	p.find("dialog", "Revoke deploy-pipeline? Anything using it is refused at once.")
	p.click("button", "Revoke")
	p.waitText("#page-status", "Token deploy-pipeline revoked.")
	p.gone("button", "Revoke deploy-pipeline, expires "+utc(newExpires))
	if _, status := env.whoIs(t, rotated); status != http.StatusUnauthorized {
		t.Errorf("revoked secret answers %d, want 401", status)
	}

	// A name that looks like markup is shown as text, never run.
	evil := `<img src=x onerror="document.title='owned'">`
	p.click("button", "Add")
	p.fill("Name", evil)
	p.click("button", "Create")
	p.find("dialog", "Token "+evil+" created")
	p.click("button", "Done")
	p.find("rowheader", evil)
	if n := eval[int](p, `document.querySelectorAll('main img, dialog img').length`); n != 0 {
		t.Errorf("a token name became %d img element(s)", n)
	}
	if title := eval[string](p, `document.title`); title != "API tokens" {
		t.Errorf("injected script ran: title %q", title)
	}
}

// sortedRows orders want like got by the Created column, since rows with the
// same name may come back in either order.
func sortedRows(want, got [][]string) [][]string {
	const created = 4
	if len(got) == len(want) && len(got) == 2 && len(got[0]) > created && got[0][created] != want[0][created] {
		return [][]string{want[1], want[0]}
	}
	return want
}

func TestBrowserSystemSettingsConfig(t *testing.T) {
	env := newEnv(t)
	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")

	p.click("link", "System Settings")
	p.find("heading", "System Settings")
	if !p.hasState("tab", "Config", "selected") {
		t.Error("the Config tab is not selected")
	}
	p.waitRows("config-body", [][]string{{"No config yet: token expiry notifications are off."}})

	// The seed's steps: Add, Config Type App Config, Key, Value, Submit.
	p.click("button", "Add")
	p.find("dialog", "Add config")
	if got := p.value("combobox", "Config Type"); got != "App Config" {
		t.Errorf("Config Type shows %q", got)
	}
	p.choose("Key", "Enable User Token Notification")
	p.fill("Value", "0")
	p.click("button", "Submit")
	// The server's own validation message, shown in the form.
	_, verr := storage.ValidateSetting(storage.SettingNotificationDays, "0")
	want := strings.TrimPrefix(verr.Error(), storage.ErrInvalid.Error()+": ")
	p.waitText("#dlg-config [role=alert]", want)
	p.find("dialog", "Add config")
	if _, err := env.store.GetSetting(context.Background(), storage.SettingNotificationDays); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a refused value was stored: %v", err)
	}
	p.fill("Value", "30")
	p.click("button", "Submit")
	p.gone("dialog", "Add config")
	p.waitText("#page-status", "Enable User Token Notification saved.")

	p.click("button", "Add")
	p.choose("Key", "User Token Expiration Notification Emails")
	p.fill("Value", "ops@example.com; dev@example.com")
	p.screenshot("config.png")
	p.click("button", "Submit")
	p.gone("dialog", "Add config")
	p.waitRows("config-body", [][]string{
		{"App Config", "Enable User Token Notification\nEnableUserTokenNotification", "30", "Edit Delete"},
		{"App Config", "User Token Expiration Notification Emails\nUserTokenExpirationNotificationEmails", "ops@example.com;dev@example.com", "Edit Delete"},
	})

	// Edit keeps the key and changes the value.
	p.click("button", "Edit Enable User Token Notification")
	p.find("dialog", "Edit config")
	if !p.hasState("combobox", "Key", "disabled") || p.value("combobox", "Key") != "Enable User Token Notification" {
		t.Error("Edit should show the key, fixed")
	}
	if got := p.value("textbox", "Value"); got != "30" {
		t.Errorf("Edit shows value %q, want 30", got)
	}
	p.fill("Value", "30;7;1")
	p.click("button", "Submit")
	p.gone("dialog", "Edit config")
	if v, _ := env.store.GetSetting(context.Background(), storage.SettingNotificationDays); v != "30;7;1" {
		t.Errorf("stored days = %q, want 30;7;1", v)
	}

	p.click("button", "Delete User Token Expiration Notification Emails")
	p.click("button", "Delete")
	p.waitText("#page-status", "User Token Expiration Notification Emails deleted.")
	p.waitRows("config-body", [][]string{
		{"App Config", "Enable User Token Notification\nEnableUserTokenNotification", "30;7;1", "Edit Delete"},
	})
	if _, err := env.store.GetSetting(context.Background(), storage.SettingNotificationEmails); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("deleted emails setting: %v, want not found", err)
	}
}

func TestBrowserFaultsFromTheAlertLoop(t *testing.T) {
	env := newEnv(t)
	env.addUser(t, "ci", "ci-password-1", false)
	year := admin.DefaultPermanentTokenLifetime
	deploy := env.addToken(t, "ci", "deploy-pipeline", start.Add(year))
	backup := env.addToken(t, "ci", "nightly-backup", start.Add(300*24*time.Hour))
	// 355 days on: deploy-pipeline has 10 days left, nightly-backup expired,
	// and a token made today has a year.
	env.clock.Advance(355 * 24 * time.Hour)
	env.addToken(t, "ci", "fresh", env.clock.Now().Add(year))

	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")
	p.click("link", "System Settings")
	p.find("heading", "System Settings")
	p.click("button", "Add")
	p.choose("Key", "Enable User Token Notification")
	p.fill("Value", "30")
	p.click("button", "Submit")
	p.gone("dialog", "Add config")

	p.click("link", "Faults")
	p.find("heading", "Faults")
	faults := env.shared.Faults()
	if len(faults) != 2 {
		t.Fatalf("the alert loop raised %d faults, want 2: %+v", len(faults), faults)
	}
	p.waitText("#faults-summary", "2 permanent tokens need attention: create a new token for its user, switch the automation to it, then revoke the old one.")
	var want [][]string
	for _, f := range faults {
		want = append(want, []string{f.User, f.TokenName, map[string]string{"expiring": "Expiring", "expired": "Expired"}[f.State],
			utc(f.ExpiresAt), strconv.Itoa(f.DaysLeft), utc(f.RaisedAt)})
	}
	p.waitRows("faults-body", want)
	// What a person checks: which token, how many days.
	got := map[string][]string{}
	for _, row := range p.rows("faults-body") {
		got[row[1]] = row
	}
	if r := got[deploy.Name]; r == nil || r[2] != "Expiring" || r[4] != "10" {
		t.Errorf("deploy-pipeline fault row = %q, want Expiring with 10 days left", r)
	}
	if r := got[backup.Name]; r == nil || r[2] != "Expired" {
		t.Errorf("nightly-backup fault row = %q, want Expired", r)
	}
	if _, listed := got["fresh"]; listed {
		t.Error("a token with 365 days left is listed as a fault")
	}
	p.screenshot("faults.png")

	// The token's link leads to its user's tokens, to act on the fault.
	p.click("link", "deploy-pipeline")
	p.find("heading", "ci")
	if !p.hasState("tab", "Tokens", "selected") {
		t.Error("the fault's link does not open the Tokens tab")
	}
	p.find("rowheader", "deploy-pipeline")
}

func TestBrowserNonAdminSeesOnlyOwnProfileAndTokens(t *testing.T) {
	env := newEnv(t)
	env.addUser(t, "dev", "dev-password-1", false)
	env.addUser(t, "other", "other-password-1", false)
	env.addToken(t, "dev", "laptop", start.Add(90*24*time.Hour))
	env.addToken(t, "other", "not-yours", start.Add(90*24*time.Hour))

	p := openPage(t, env)
	p.login("dev", "dev-password-1", "My profile")
	if got := p.text("#whoami"); got != "dev" {
		t.Errorf("signed-in user shows %q", got)
	}
	p.find("link", "My profile")
	for _, adminOnly := range []string{"Users", "System Settings", "Faults"} {
		p.absent("link", adminOnly)
	}
	if got := p.text("#profile"); got != "Username\ndev\nEmail\ndev@example.com\nRole\nUser\nStatus\nActive\nCreated\n"+utc(start)+"\nScopes\nNone" {
		t.Errorf("profile shows %q", got)
	}

	// They may change their own password, with the current one.
	p.fill("Current password", "not-it")
	p.fill("New password", "dev-password-2")
	p.click("button", "Change password")
	p.waitText("#password-form .error", "current_password is not your current password; nothing was changed (wrong attempts count as failed logins)")
	p.fill("Current password", "dev-password-1")
	p.fill("New password", "dev-password-2")
	p.click("button", "Change password")
	p.waitText("#page-status", "Password of dev changed.")
	if _, err := env.store.CheckPassword(context.Background(), "dev", "dev-password-2"); err != nil {
		t.Errorf("the new password does not work: %v", err)
	}

	p.click("tab", "Tokens")
	p.find("rowheader", "laptop")
	p.find("rowheader", "This session")
	p.absent("rowheader", "not-yours")
	p.absent("button", "Add")
	p.absent("button", "Rotate laptop")
	p.absent("button", "Edit allowed networks of laptop") // narrowing is for administrators

	// Typing an admin address shows the own profile, never others' data.
	eval[chromedp.Void](p, `location.hash = '#/users/other/tokens'`)
	p.find("heading", "My profile")
	p.absent("rowheader", "not-yours")

	// Owners may revoke their own tokens.
	p.click("tab", "Tokens")
	p.click("button", "Revoke laptop, expires "+utc(start.Add(90*24*time.Hour)))
	p.click("button", "Revoke")
	p.gone("rowheader", "laptop")
	if toks, _, _ := env.store.ListUserTokensPage(context.Background(), "dev", "", 100); len(toks) != 1 || toks[0].Kind != storage.Temporary {
		t.Errorf("dev's tokens after revoking laptop: %+v, want only the login session", toks)
	}

	// Revoking the session in use logs out.
	session := p.sessionToken()
	p.click("button", "Revoke This session, expires "+utc(start.Add(admin.DefaultSessionTTL)))
	p.find("dialog", "Revoke this session? You will be logged out.")
	p.click("button", "Revoke")
	p.find("heading", "Log in")
	p.waitText("#page-status", "You are logged out.")
	if _, status := env.whoIs(t, session); status != http.StatusUnauthorized {
		t.Errorf("the revoked session answers %d, want 401", status)
	}
}

// Everything can be done from the keyboard: Tab moves through controls in
// a sensible order, Enter activates, Escape closes dialogs, arrows switch
// tabs.
func TestBrowserKeyboardOnly(t *testing.T) {
	env := newEnv(t)
	env.addUser(t, "ci", "ci-password-1", false)
	p := openPage(t, env)

	p.find("heading", "Log in")
	if !p.hasState("textbox", "Username", "focused") {
		t.Fatal("the login form does not start with the focus in Username")
	}
	p.keys(adminName + "\t" + adminPassword + kb.Enter)
	p.find("heading", "Users")
	if !p.hasState("heading", "Users", "focused") {
		t.Error("focus did not move to the new page's heading")
	}

	p.keys("\t") // from the heading to its Add button
	if !p.hasState("button", "Add", "focused") {
		t.Fatal("Tab from the Users heading does not reach Add")
	}
	p.keys(kb.Enter)
	p.find("dialog", "Add user")
	if !p.hasState("textbox", "Username", "focused") {
		t.Error("the Add user dialog does not put the focus in its first field")
	}
	p.keys(kb.Escape)
	p.gone("dialog", "Add user")
	if !p.hasState("button", "Add", "focused") {
		t.Error("closing the dialog does not give the focus back to Add")
	}

	p.keys(kb.Enter)
	p.keys("kb-user\tkb@example.com\tkb-password-1" + kb.Enter)
	p.waitText("#page-status", "User kb-user created.")

	// Tab to the link of user ci and open it with Enter.
	for i := 0; i < 20 && !p.hasState("link", "ci", "focused"); i++ {
		p.keys("\t")
	}
	if !p.hasState("link", "ci", "focused") {
		t.Fatal("Tab never reaches the link to user ci")
	}
	p.keys(kb.Enter)
	p.find("heading", "ci")
	p.focus("tab", "Profile")
	p.keys(kb.ArrowRight)
	if !p.hasState("tab", "Tokens", "selected") || !p.hasState("tab", "Tokens", "focused") {
		t.Error("ArrowRight on the Profile tab does not select the Tokens tab")
	}
	p.waitRows("tokens-body", [][]string{{"No tokens yet."}})
}

// The Content-Security-Policy reaches the browser and holds: markup that
// slipped into the page could neither run a script nor restyle it, and the
// browser reports each attempt (which is also how every other test here
// fails on a violation).
func TestBrowserCSPBlocksInjectedCode(t *testing.T) {
	env := newEnv(t)
	p := openPage(t, env)
	p.find("heading", "Log in")
	eval[chromedp.Void](p, `
		const s = document.createElement('script');
		s.textContent = 'document.title = "owned"';
		document.body.append(s);
		document.body.setAttribute('style', 'background: red');`)
	if title := eval[string](p, `document.title`); title != "API tokens" {
		t.Errorf("an injected inline script ran: title %q", title)
	}
	if bg := eval[string](p, `getComputedStyle(document.body).backgroundColor`); bg == "rgb(255, 0, 0)" {
		t.Error("an injected style attribute applied")
	}
	var blocked []string
	p.waitFor("the browser to report both violations", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		blocked = blocked[:0]
		for _, msg := range p.problems {
			if strings.Contains(msg, "Content Security Policy") {
				blocked = append(blocked, msg)
			}
		}
		return len(blocked) == 2
	})
	p.mu.Lock()
	p.problems = nil // expected here; any other test fails on them
	p.mu.Unlock()
}

// TestBrowserListsLongerThanAPage: the API answers a list a page of 100 at
// a time; the page follows the Link headers, so a person sees every user
// and every token, each once, however long the list.
func TestBrowserListsLongerThanAPage(t *testing.T) {
	env := newEnv(t)
	const users, tokens = 120, 150
	for i := range users {
		env.addUser(t, fmt.Sprintf("user-%03d", i), "user-password-1", false)
	}
	batch := make([]storage.NewToken, tokens)
	for i := range batch {
		batch[i] = storage.NewToken{User: "user-007", Name: fmt.Sprintf("ci-%03d", i), Kind: storage.Permanent,
			ExpiresAt: start.Add(time.Duration(i+1) * 24 * time.Hour), CreatedBy: adminName}
	}
	if _, _, err := env.store.CreateTokens(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")
	p.waitFor(fmt.Sprintf("%d users", users+1), func() bool { return len(p.rows("users-body")) == users+1 })
	firstCells := func(tbody string) []string {
		var out []string
		for _, r := range p.rows(tbody) {
			out = append(out, r[0])
		}
		return out
	}
	want := []string{adminName}
	for i := range users {
		want = append(want, fmt.Sprintf("user-%03d", i))
	}
	if got := firstCells("users-body"); !slices.Equal(got, want) {
		t.Fatalf("users shown: %v\nwant %v", got, want)
	}

	p.click("link", "user-007")
	p.find("heading", "user-007")
	p.click("tab", "Tokens")
	p.waitFor(fmt.Sprintf("%d tokens", tokens), func() bool { return len(p.rows("tokens-body")) == tokens })
	got := firstCells("tokens-body")
	slices.Sort(got)
	want = want[:0]
	for i := range tokens {
		want = append(want, fmt.Sprintf("ci-%03d", i))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("tokens shown: %v\nwant each of %v once", got, want)
	}
	p.checkNoProblems()
}
