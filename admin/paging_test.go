package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

var linkNext = regexp.MustCompile(`^<([^<>]+)>; rel="next"$`)

// nextLink returns the URL reference of an answer's Link header, "" if
// there is none, failing on a header of another shape.
func nextLink(t testing.TB, r resp) string {
	t.Helper()
	h := r.header.Values("Link")
	if len(h) == 0 {
		return ""
	}
	m := linkNext.FindStringSubmatch(h[0])
	if len(h) > 1 || m == nil {
		t.Fatalf("Link = %q; want one <url>; rel=\"next\"", h)
	}
	return m[1]
}

// walkList follows a list's Link headers from path and returns the keys
// of every item (as key picks them) and the links it followed.
func (e *env) walkList(t *testing.T, path, token string, key func(map[string]any) string) (keys, links []string) {
	t.Helper()
	for range 1000 {
		r := e.must(http.StatusOK, "GET", path, token, "")
		var items []map[string]any
		r.decode(t, &items)
		for _, it := range items {
			keys = append(keys, key(it))
		}
		next := nextLink(t, r)
		if next == "" {
			return keys, links
		}
		if len(items) == 0 {
			t.Fatalf("GET %s: an empty page with a next link", path)
		}
		links = append(links, next)
		path = next
	}
	t.Fatalf("GET %s: more than 1000 pages", path)
	return nil, nil
}

func field(name string) func(map[string]any) string {
	return func(m map[string]any) string { return fmt.Sprint(m[name]) }
}

// TestListsPageThroughLinks: each list answers pages of limit items with a
// Link to the next, which keeps the path, the filters and the limit, and
// walking the links gives the whole list in its order, once.
func TestListsPageThroughLinks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 6 {
		if _, err := e.store.CreateUser(ctx, storage.NewUser{Username: fmt.Sprintf("user-%d", i), Password: "pw-user-1"}); err != nil {
			t.Fatal(err)
		}
	}
	var batch []storage.NewToken
	for i := range 12 {
		batch = append(batch, storage.NewToken{User: "user-3", Name: fmt.Sprintf("ci-%02d", i), Kind: storage.Permanent,
			ExpiresAt: testStart.Add(time.Duration(5+i*10) * 24 * time.Hour)})
	}
	_, made, err := e.store.CreateTokens(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	all, _, _ := e.store.ListTokensPage(ctx, storage.TokenFilter{}, "", storage.MaxPageLimit)
	expiring, _, _ := e.store.ListTokensPage(ctx, storage.TokenFilter{ExpiringBefore: testStart.Add(60 * 24 * time.Hour), Kind: storage.Permanent}, "", storage.MaxPageLimit)
	if len(expiring) != 6 {
		t.Fatalf("fixture: %d tokens expire within 60 days; want 6", len(expiring))
	}
	var userTokens []string
	for _, tk := range all {
		if tk.User == "user-3" {
			userTokens = append(userTokens, tk.ID)
		}
	}
	tokenIDs := func(ts []storage.Token) []string {
		var out []string
		for _, tk := range ts {
			out = append(out, tk.ID)
		}
		return out
	}
	users, _, _ := e.store.ListUsersPage(ctx, "", storage.MaxPageLimit)
	var usernames []string
	for _, u := range users {
		usernames = append(usernames, u.Username)
	}
	audit, _, _ := e.store.ListAuditPage(ctx, "", storage.MaxPageLimit)
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action+" "+a.Target)
	}
	action := func(m map[string]any) string { return fmt.Sprintf("%s %s", m["action"], m["target"]) }

	for _, c := range []struct {
		path  string
		key   func(map[string]any) string
		want  []string
		limit int
	}{
		{"/users?limit=2", field("username"), usernames, 2},
		{"/tokens?limit=5", field("id"), tokenIDs(all), 5},
		{"/tokens?expiring_within=60d&kind=permanent&limit=4", field("id"), tokenIDs(expiring), 4},
		{"/users/user-3/tokens?limit=5", field("id"), userTokens, 5},
		{"/audit?limit=3", action, actions, 3},
	} {
		got, links := e.walkList(t, c.path, e.root, c.key)
		if !slices.Equal(got, c.want) {
			t.Errorf("walking %s:\n got %v\nwant %v", c.path, got, c.want)
		}
		if want := (len(c.want) - 1) / c.limit; len(links) != want {
			t.Errorf("walking %s followed %d links; want %d", c.path, len(links), want)
		}
		base, _ := url.Parse(c.path)
		for _, l := range links {
			u, err := url.Parse(l)
			if err != nil || u.Path != base.Path || u.Query().Get("cursor") == "" {
				t.Errorf("link %q: want the path %s with a cursor", l, base.Path)
				continue
			}
			q := u.Query()
			q.Del("cursor")
			if q.Encode() != base.Query().Encode() {
				t.Errorf("link %q does not keep the query %q", l, base.RawQuery)
			}
		}
	}
	if len(made) != 12 || len(userTokens) != 12 {
		t.Fatalf("user-3 has %d tokens; want 12", len(userTokens))
	}

	// Without limit a page holds 100.
	for range 110 {
		if err := e.store.AppendAudit(ctx, storage.AuditEntry{Action: storage.ActionLoginFailed}); err != nil {
			t.Fatal(err)
		}
	}
	r := e.must(http.StatusOK, "GET", "/audit", e.root, "")
	var page []storage.AuditEntry
	r.decode(t, &page)
	if len(page) != storage.DefaultPageLimit || nextLink(t, r) == "" {
		t.Errorf("GET /audit = %d entries, Link %q; want 100 and a next page", len(page), r.header.Get("Link"))
	}
}

// TestListsRefuseBadPaging: a limit out of range or a cursor that is not
// one the list gave out gets 400 with a message saying what to send, on
// every list.
func TestListsRefuseBadPaging(t *testing.T) {
	e := newEnv(t)
	tokens := map[string]string{"root": e.root, "alice": e.addUser("alice")}
	e.addToken("alice", "ci")
	e.addToken("alice", "cd")
	cursorOf := func(path string) string {
		u, _ := url.Parse(nextLink(t, e.must(http.StatusOK, "GET", path, e.root, "")))
		return url.QueryEscape(u.Query().Get("cursor"))
	}
	users := cursorOf("/users?limit=1")
	aliceTokens := cursorOf("/users/alice/tokens?limit=1")
	allTokens := cursorOf("/tokens?limit=1")
	expiring := cursorOf("/tokens?expiring_within=400d&limit=1")
	if users == "" || aliceTokens == "" || allTokens == "" || expiring == "" {
		t.Fatal("a list of two or more items gave no next page at limit=1")
	}
	var calls []call
	for _, p := range []string{"/users", "/users/alice/tokens", "/tokens", "/tokens?expiring_within=30d", "/audit"} {
		sep := "?"
		if strings.Contains(p, "?") {
			sep = "&"
		}
		for _, q := range []string{"limit=0", "limit=1001", "limit=-1", "limit=ten", "limit=", "limit=1&limit=2"} {
			calls = append(calls, call{"bad " + q, "GET", p + sep + q, "root", "", 400, "limit must be a whole number from 1 to 1000"})
		}
		calls = append(calls,
			call{"garbage cursor", "GET", p + sep + "cursor=not-a-cursor", "root", "", 400, "cursor"},
			call{"cursor twice", "GET", p + sep + "cursor=" + users + "&cursor=" + users, "root", "", 400, "cursor"},
			call{"empty cursor: the first page", "GET", p + sep + "cursor=", "root", "", 200, ""},
		)
	}
	calls = append(calls,
		call{"tokens cursor for users", "GET", "/users?cursor=" + allTokens, "root", "", 400, "another list"},
		call{"users cursor for tokens", "GET", "/tokens?cursor=" + users, "root", "", 400, "another list"},
		call{"order by expiry, cursor of the other order", "GET", "/tokens?expiring_within=30d&cursor=" + allTokens, "root", "", 400, "another list"},
		call{"the other way round", "GET", "/tokens?cursor=" + expiring, "root", "", 400, "another list"},
		call{"alice's cursor for root's tokens", "GET", "/users/root/tokens?cursor=" + aliceTokens, "root", "", 400, "another list"},
		call{"alice's cursor for the audit log", "GET", "/audit?cursor=" + aliceTokens, "root", "", 400, "another list"},
		call{"alice pages her own tokens", "GET", "/users/alice/tokens?limit=1&cursor=" + aliceTokens, "alice", "", 200, ""},
		call{"alice may not list root's, cursor or not", "GET", "/users/root/tokens?cursor=" + aliceTokens, "alice", "", 403, ""},
	)
	e.run(t, tokens, calls)
}

// TestNextLinkUnderAPrefix: mounted under a prefix that a proxy strips,
// the links keep the prefix the client used, by default from the request
// line (http.StripPrefix keeps it) or from Config.RequestPath.
func TestNextLinkUnderAPrefix(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"bob", "carol"} {
		if _, err := e.store.CreateUser(context.Background(), storage.NewUser{Username: name, Password: "pw-" + name + "-1"}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(h http.Handler, path string) (string, int) {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+e.root)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var items []json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &items); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, rec.Code, rec.Body)
		}
		return nextLink(t, resp{status: rec.Code, header: rec.Header()}), len(items)
	}
	stripped := http.StripPrefix("/api-tokens", e.handler)
	link, n := get(stripped, "/api-tokens/users?limit=2")
	if !strings.HasPrefix(link, "/api-tokens/users?") || n != 2 {
		t.Fatalf("under /api-tokens: Link %q, %d users", link, n)
	}
	link, n = get(stripped, link)
	if link != "" || n != 1 {
		t.Fatalf("the second page: Link %q, %d users; want the last user and no link", link, n)
	}

	custom := New(Config{Store: e.store, Clock: e.clock, RequestPath: func(*http.Request) string { return "/outer/inner/users" }})
	if link, _ := get(custom, "/users?limit=1"); !strings.HasPrefix(link, "/outer/inner/users?") {
		t.Errorf("with RequestPath: Link %q", link)
	}
	odd := New(Config{Store: e.store, Clock: e.clock, RequestPath: func(*http.Request) string { return "//evil.example/users" }})
	if link, _ := get(odd, "/users?limit=1"); !strings.HasPrefix(link, "?") || !strings.Contains(link, "cursor=") {
		t.Errorf("a path that would read as a host: Link %q; want a query-only reference", link)
	}
}
