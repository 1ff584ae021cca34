package ui_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/apitokens/caddy-api-tokens/admin"
	"github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// TestScopesInTheBrowser: an administrator gives a user scopes, creates a
// token with some of them and allowed networks, sees which scopes no
// request needed for 30 days and takes them away, all in the page; the
// API then holds exactly what was asked for.
func TestScopesInTheBrowser(t *testing.T) {
	// Uses reach storage within moments (in Caddy: every 30 s), so the
	// page can show a scope's last use and the last address.
	env := newEnv(t, func(o *storage.Options) { o.LastUsedFlushInterval = 10 * time.Millisecond })
	catalogue := []storage.Scope{
		{Name: "deploy", Description: "Trigger deployments"},
		{Name: "reports:read", Description: "Read reports"},
		{Name: "reports:write", Description: "Create and change reports"},
	}
	env.store.SetScopes(catalogue)
	ctx := context.Background()
	p := openPage(t, env)
	p.login(adminName, adminPassword, "Users")

	// A user made with one scope, from the catalogue's checkboxes ...
	p.click("button", "Add")
	p.find("dialog", "Add user")
	p.fill("Username", "ci")
	p.fill("Password", "ci-password-1")
	p.click("checkbox", "reports:read")
	p.click("button", "Create")
	p.waitText("#page-status", "User ci created.")
	if u, err := env.store.GetUser(ctx, "ci"); err != nil || !slices.Equal(u.Scopes, []string{"reports:read"}) {
		t.Fatalf("ci as created: %+v, %v; want the scope ticked", u, err)
	}

	// ... and given a second on their profile.
	p.click("link", "ci")
	p.find("heading", "ci")
	for name, want := range map[string]bool{"deploy": false, "reports:read": true, "reports:write": false} {
		if got := p.checked(name); got != want {
			t.Errorf("profile: checkbox %s ticked = %v, want %v", name, got, want)
		}
	}
	p.click("checkbox", "reports:write")
	p.click("button", "Save scopes")
	p.waitText("#page-status", "Scopes of ci saved.")
	if u, _ := env.store.GetUser(ctx, "ci"); !slices.Equal(u.Scopes, []string{"reports:read", "reports:write"}) {
		t.Fatalf("ci's scopes after saving: %v", u.Scopes)
	}
	p.waitText("#profile dd:last-of-type", "reports:read reports:write")

	// The token form offers the user's scopes, ticked, and nothing more.
	p.click("tab", "Tokens")
	p.click("button", "Add")
	p.find("dialog", "Add token")
	if p.checked("deploy") || !p.hasState("checkbox", "deploy", "disabled") {
		t.Error("deploy, which ci does not hold, can be given to ci's token")
	}
	for _, name := range []string{"reports:read", "reports:write"} {
		if !p.checked(name) || p.hasState("checkbox", name, "disabled") {
			t.Errorf("%s, which ci holds, is not ticked and free to change", name)
		}
	}
	if got := p.text("#token-scopes"); got != "deploy\nTrigger deployments (the user does not hold it)\nreports:read\nRead reports\nreports:write\nCreate and change reports" {
		t.Errorf("the scope choices read %q", got)
	}
	p.fill("Name", "reports-sync")
	p.fill("Allowed networks (optional)", "10.0.0.1/8")
	p.click("button", "Create")
	// The server's 400 shows in the dialog, which stays open.
	p.waitText("#dlg-token [role=alert]",
		`allowed_cidrs: "10.0.0.1/8" is not canonical: its address has bits beyond the prefix length; did you mean 10.0.0.0/8?`)
	p.fill("Allowed networks (optional)", "10.0.0.0/8, 192.0.2.0/24")
	p.click("button", "Create")
	p.find("dialog", "Token reports-sync created")
	p.waitText("#secret-facts", "Scopes\nreports:read reports:write\nAllowed networks\n10.0.0.0/8 192.0.2.0/24")
	sec := p.value("textbox", "Token")
	p.click("button", "Done")
	p.gone("dialog", "Token reports-sync created")

	tok := env.tokenNamed(t, p.sessionToken(), "ci", "reports-sync")
	if !slices.Equal(tok.Scopes, []string{"reports:read", "reports:write"}) ||
		!slices.Equal(tok.AllowedCIDRs, []string{"10.0.0.0/8", "192.0.2.0/24"}) {
		t.Fatalf("the API holds scopes %q and allowed_cidrs %q, not what the form asked", tok.Scopes, tok.AllowedCIDRs)
	}

	// A token made today has had no chance to use its scopes: none is
	// marked unused.
	expires := start.Add(admin.DefaultPermanentTokenLifetime)
	p.waitRows("tokens-body", [][]string{{"reports-sync", "Permanent", "reports:read remove\nreports:write remove",
		"10.0.0.0/8\n192.0.2.0/24\nEdit", utc(start), utc(expires), "Never", "Active", "Rotate Revoke"}})
	p.absent("button", "Remove unused scopes from reports-sync")

	// 31 days on, a request from 10.1.2.3 needs reports:read; nothing
	// has needed reports:write. A shadow route that would need deploy
	// lets the token through and notes that it lacks it.
	env.clock.Advance(31 * 24 * time.Hour)
	usedAt := env.clock.Now()
	v := env.store.Verifier()
	var declared []string
	for _, s := range catalogue {
		declared = append(declared, s.Name)
	}
	policy, err := v.Policy([]string{"reports:read"}, declared, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, res := v.VerifyFrom(sec, &policy, netip.MustParseAddr("10.1.2.3")); res != verifier.ResultOK {
		t.Fatalf("the token on a reports:read route from 10.1.2.3: %v", res)
	}
	shadow, err := v.Policy([]string{"deploy"}, declared, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, res := v.VerifyFrom(sec, &shadow, netip.MustParseAddr("10.1.2.3")); res != verifier.ResultOK {
		t.Fatalf("the token on a shadow deploy route: %v", res)
	}
	p.waitFor("the uses to reach storage", func() bool {
		got, err := env.store.GetUserToken(ctx, "ci", tok.ID)
		return err == nil && got.LastUsedIP == "10.1.2.3" &&
			got.ScopeUsage["reports:read"].LastNeededAt != nil && got.ScopeUsage["deploy"].LastMissingAt != nil
	})

	// The login session ended meanwhile: log in again, back on ci's
	// tokens, where exactly the unused scope is marked, and the one the
	// token lacked on the shadow route is named.
	p.do(chromedp.Reload())
	p.login(adminName, adminPassword, "ci")
	p.waitRows("tokens-body", [][]string{{"reports-sync", "Permanent",
		"reports:read remove\nreports:write unused 30 d remove\nMissing on shadow routes: deploy\nRemove unused scopes", "10.0.0.0/8\n192.0.2.0/24\nEdit",
		utc(start), utc(expires), utc(usedAt) + "\nfrom 10.1.2.3", "Active", "Rotate Revoke"}})
	p.screenshot("token-scopes.png")

	// One click takes it away, after asking.
	p.click("button", "Remove unused scopes from reports-sync")
	p.find("dialog", "Remove scope reports:write from reports-sync? Requests that need it are refused at once; only a new token can have it again.")
	p.click("button", "Remove")
	p.waitText("#page-status", "Token reports-sync no longer has scope reports:write.")
	if got := env.tokenNamed(t, p.sessionToken(), "ci", "reports-sync").Scopes; !slices.Equal(got, []string{"reports:read"}) {
		t.Fatalf("scopes after Remove unused scopes: %q, want only reports:read", got)
	}
	p.waitRows("tokens-body", [][]string{{"reports-sync", "Permanent", "reports:read remove\nMissing on shadow routes: deploy",
		"10.0.0.0/8\n192.0.2.0/24\nEdit", utc(start), utc(expires), utc(usedAt) + "\nfrom 10.1.2.3", "Active", "Rotate Revoke"}})

	// The networks are replaced: the address it was used from is then
	// refused.
	p.click("button", "Edit allowed networks of reports-sync")
	p.find("dialog", "Allowed networks")
	if got := p.value("textbox", "Allowed networks"); got != "10.0.0.0/8 192.0.2.0/24" {
		t.Errorf("the networks form starts with %q", got)
	}
	p.fill("Allowed networks", "192.0.2.0/24")
	p.click("button", "Save")
	p.waitText("#page-status", "Token reports-sync may be used from 192.0.2.0/24.")
	if got := env.tokenNamed(t, p.sessionToken(), "ci", "reports-sync").AllowedCIDRs; !slices.Equal(got, []string{"192.0.2.0/24"}) {
		t.Fatalf("allowed_cidrs after the edit: %q", got)
	}
	p.waitFor("10.1.2.3 to be refused", func() bool {
		_, res := v.VerifyFrom(sec, &policy, netip.MustParseAddr("10.1.2.3"))
		return res == verifier.ResultNetworkNotAllowed
	})

	// Taking reports:read from ci marks it on the token, which can no
	// longer use it.
	p.click("tab", "Profile")
	p.click("checkbox", "reports:read")
	p.click("button", "Save scopes")
	p.waitText("#page-status", "Scopes of ci saved.")
	p.click("tab", "Tokens")
	p.waitRows("tokens-body", [][]string{{"reports-sync", "Permanent", "reports:read not held by user remove\nMissing on shadow routes: deploy",
		"192.0.2.0/24\nEdit", utc(start), utc(expires), utc(usedAt) + "\nfrom 10.1.2.3", "Active", "Rotate Revoke"}})

	// A scope is removed on its own with its remove button.
	p.click("button", "Remove scope reports:read from reports-sync")
	p.find("dialog", "Remove scope reports:read from reports-sync? Requests that need it are refused at once; only a new token can have it again.")
	p.click("button", "Remove")
	p.waitText("#page-status", "Token reports-sync no longer has scope reports:read.")
	if got := env.tokenNamed(t, p.sessionToken(), "ci", "reports-sync").Scopes; len(got) != 0 {
		t.Fatalf("scopes after removing the last: %q, want none", got)
	}
	p.waitRows("tokens-body", [][]string{{"reports-sync", "Permanent", "none\nMissing on shadow routes: deploy",
		"192.0.2.0/24\nEdit", utc(start), utc(expires), utc(usedAt) + "\nfrom 10.1.2.3", "Active", "Rotate Revoke"}})
}

// checked reports whether the checkbox with this name is ticked.
func (p *page) checked(name string) bool {
	p.t.Helper()
	for _, prop := range p.find("checkbox", name).Properties {
		if string(prop.Name) == "checked" {
			// A tristate: "true", "false" or "mixed".
			var s string
			_ = json.Unmarshal(prop.Value.Value, &s)
			return s == "true"
		}
	}
	return false
}

// tokenNamed reads the user's token with this name through the API, as
// the bearer sees it: the list gives its id, GET /users/{u}/tokens/{id}
// the token.
func (e *testEnv) tokenNamed(t *testing.T, bearer, user, name string) storage.Token {
	t.Helper()
	var list []storage.Token
	e.apiGet(t, bearer, "/users/"+user+"/tokens", &list)
	for _, tok := range list {
		if tok.Name == name {
			var one storage.Token
			e.apiGet(t, bearer, "/users/"+user+"/tokens/"+tok.ID, &one)
			return one
		}
	}
	t.Fatalf("the API lists no token %s of %s: %+v", name, user, list)
	return storage.Token{}
}

func (e *testEnv) apiGet(t *testing.T, bearer, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url(path), nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
