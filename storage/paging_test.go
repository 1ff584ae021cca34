package storage_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
	. "github.com/apitokens/caddy-api-tokens/storage"
	"github.com/apitokens/caddy-api-tokens/storage/kv"
)

const day = 24 * time.Hour

// pager fetches one page of a list.
type pager[T any] func(cursor string, limit int) ([]T, string, error)

// walk pages through a list with limit and returns every item, failing
// the test on an error, on a page that is not full although more follow,
// or on an empty last page (unless the list is empty). between runs after
// each page but the last, with the number of the page just read.
func walk[T any](t *testing.T, page pager[T], limit int, between func(page int)) []T {
	t.Helper()
	var all []T
	cursor := ""
	for n := 1; ; n++ {
		items, next, err := page(cursor, limit)
		if err != nil {
			t.Fatalf("page %d (cursor %q): %v", n, cursor, err)
		}
		all = append(all, items...)
		if next == "" {
			if len(items) == 0 && n > 1 {
				t.Fatalf("page %d, the last, is empty: the page before should have had no next cursor", n)
			}
			if len(items) > limit {
				t.Fatalf("page %d has %d items; limit %d", n, len(items), limit)
			}
			return all
		}
		if len(items) != limit {
			t.Fatalf("page %d has %d items and a next cursor; want a full page of %d", n, len(items), limit)
		}
		if next == cursor || n > 5000 {
			t.Fatalf("page %d: the walk does not advance (cursor %q)", n, next)
		}
		if between != nil {
			between(n)
		}
		cursor = next
	}
}

func ids(ts []Token) []string {
	out := make([]string, len(ts))
	for i, tk := range ts {
		out[i] = tk.ID
	}
	return out
}

// byListOrder is the order of the token lists: user, creation time, id.
func byListOrder(a, b Token) int {
	return cmp.Or(strings.Compare(a.User, b.User), a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}

// byExpiry is the order of a list filtered by expiry: expiry, then id.
func byExpiry(a, b Token) int {
	return cmp.Or(a.ExpiresAt.Compare(b.ExpiresAt), strings.Compare(a.ID, b.ID))
}

func tokensPager(s *Store, f TokenFilter) pager[Token] {
	return func(c string, n int) ([]Token, string, error) { return s.ListTokensPage(context.Background(), f, c, n) }
}

func userTokensPager(s *Store, user string) pager[Token] {
	return func(c string, n int) ([]Token, string, error) {
		return s.ListUserTokensPage(context.Background(), user, c, n)
	}
}

// orderFixture makes users whose names sort differently with and without
// a separator ("al" before "al-x" before "alice"), each with permanent and
// temporary tokens created at different times and some in one batch (the
// same creation time, told apart by id), with expiries spread so that a
// 30-day filter keeps some of each kind. It returns every token.
func orderFixture(t *testing.T, s *Store, clock *testtools.FakeClock) []Token {
	t.Helper()
	var all []Token
	users := []string{"alice", "al-x", "al", "bob"}
	for _, u := range users {
		mustCreateUser(t, s, u, false)
	}
	for i := range 3 {
		for j, u := range users {
			_, tk, _ := mustToken(t, s, u, fmt.Sprintf("p%d", i), Permanent, clock.Now().Add(time.Duration(10+40*((i+j)%3))*day))
			all = append(all, tk)
			clock.Advance(time.Second)
			_, tmp, _ := mustToken(t, s, u, "", Temporary, clock.Now().Add(time.Duration(1+i+j)*time.Hour))
			all = append(all, tmp)
		}
		clock.Advance(time.Minute)
	}
	var batch []NewToken
	for i := range 5 {
		batch = append(batch, NewToken{User: "al", Name: fmt.Sprintf("batch-%d", i), Kind: Permanent, ExpiresAt: clock.Now().Add(time.Duration(20+i) * day)})
	}
	_, metas, err := s.CreateTokens(ctxAs("root"), batch)
	if err != nil {
		t.Fatal(err)
	}
	return append(all, metas...)
}

func filtered(ts []Token, keep func(Token) bool, order func(a, b Token) int) []string {
	var out []Token
	for _, tk := range ts {
		if keep(tk) {
			out = append(out, tk)
		}
	}
	slices.SortFunc(out, order)
	return ids(out)
}

// TestPagedListsOrder: every list comes in its documented order, the same
// whatever the page size, with full pages and no empty last page.
func TestPagedListsOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		all := orderFixture(t, s, clock)
		soon := clock.Now().Add(30 * day)
		cases := []struct {
			name string
			page pager[Token]
			want []string
		}{
			{"all", tokensPager(s, TokenFilter{}), filtered(all, func(Token) bool { return true }, byListOrder)},
			{"permanent", tokensPager(s, TokenFilter{Kind: Permanent}), filtered(all, func(tk Token) bool { return tk.Kind == Permanent }, byListOrder)},
			{"temporary", tokensPager(s, TokenFilter{Kind: Temporary}), filtered(all, func(tk Token) bool { return tk.Kind == Temporary }, byListOrder)},
			{"expiring", tokensPager(s, TokenFilter{ExpiringBefore: soon}), filtered(all, func(tk Token) bool { return tk.ExpiresAt.Before(soon) }, byExpiry)},
			{"expiring permanent", tokensPager(s, TokenFilter{ExpiringBefore: soon, Kind: Permanent}),
				filtered(all, func(tk Token) bool { return tk.ExpiresAt.Before(soon) && tk.Kind == Permanent }, byExpiry)},
			{"al's", userTokensPager(s, "al"), filtered(all, func(tk Token) bool { return tk.User == "al" }, byListOrder)},
			{"al-x's", userTokensPager(s, "al-x"), filtered(all, func(tk Token) bool { return tk.User == "al-x" }, byListOrder)},
		}
		for _, c := range cases {
			if len(c.want) < 4 {
				t.Fatalf("%s: the fixture gives only %d tokens", c.name, len(c.want))
			}
			for _, limit := range []int{1, 2, 3, 7, 1000} {
				if got := ids(walk(t, c.page, limit, nil)); !slices.Equal(got, c.want) {
					t.Errorf("%s, limit %d:\n got %v\nwant %v", c.name, limit, got, c.want)
				}
			}
		}
		if all, err := s.ListTokens(context.Background(), TokenFilter{}); err != nil || len(all) != len(cases[0].want) {
			t.Errorf("ListTokens = %d tokens, %v; want %d", len(all), err, len(cases[0].want))
		}

		names := func(us []User) []string {
			out := make([]string, len(us))
			for i, u := range us {
				out[i] = u.Username
			}
			return out
		}
		users := func(c string, n int) ([]User, string, error) { return s.ListUsersPage(context.Background(), c, n) }
		for _, limit := range []int{1, 3, 100} {
			if got := names(walk(t, users, limit, nil)); !slices.Equal(got, []string{"al", "al-x", "alice", "bob"}) {
				t.Errorf("users, limit %d = %v", limit, got)
			}
		}
	})
}

// TestPageLimits: a limit below 1 means the default, above the maximum
// the maximum.
func TestPageLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		createUserTokens(t, s, clock.Now(), "alice", MaxPageLimit+5)
		for _, c := range []struct{ limit, want int }{{0, DefaultPageLimit}, {-1, DefaultPageLimit}, {MaxPageLimit + 1, MaxPageLimit}, {3, 3}} {
			page, next, err := s.ListTokensPage(context.Background(), TokenFilter{}, "", c.limit)
			if err != nil || len(page) != c.want || next == "" {
				t.Errorf("limit %d: %d tokens, next %q, %v; want %d and a next page", c.limit, len(page), next, err, c.want)
			}
		}
	})
}

// TestPagingWhileTokensChange: tokens created and deleted between pages,
// before and after the cursor, never make a walk repeat a token or skip
// one that existed throughout, in every token list's order.
func TestPagingWhileTokensChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		for _, u := range []string{"aaron", "mia", "zoe"} {
			mustCreateUser(t, s, u, false)
		}
		users := []string{"aaron", "mia", "zoe"}
		var survivors []Token
		for i := range 27 {
			_, tk, _ := mustToken(t, s, users[i%3], fmt.Sprintf("t%d", i), Permanent, clock.Now().Add(time.Duration(1+i*7%40)*day))
			survivors = append(survivors, tk)
			clock.Advance(time.Second)
		}
		for _, c := range []struct {
			name string
			page pager[Token]
			keep func(Token) bool
		}{
			{"all", tokensPager(s, TokenFilter{}), func(Token) bool { return true }},
			{"expiring", tokensPager(s, TokenFilter{ExpiringBefore: clock.Now().Add(50 * day)}), func(Token) bool { return true }},
			{"mia's", userTokensPager(s, "mia"), func(tk Token) bool { return tk.User == "mia" }},
		} {
			t.Run(c.name, func(t *testing.T) {
				// Tokens that are deleted during the walk, one per page,
				// wherever they are in the order.
				var doomed []Token
				for i := range 9 {
					_, tk, _ := mustToken(t, s, users[i%3], fmt.Sprintf("%s-doomed-%d", c.name, i), Permanent, clock.Now().Add(time.Duration(1+i*11%45)*day))
					doomed = append(doomed, tk)
					clock.Advance(time.Second)
				}
				created := 0
				churn := func(int) {
					// New tokens land before, among and after the listed
					// ones, by user, creation time and expiry.
					for _, u := range users {
						created++
						exp := clock.Now().Add(time.Duration(1+created*13%45) * day)
						if _, _, err := s.CreateToken(ctx, NewToken{User: u, Name: fmt.Sprintf("%s-new-%d", c.name, created), Kind: Permanent, ExpiresAt: exp}); err != nil {
							t.Fatal(err)
						}
					}
					if len(doomed) > 0 {
						d := doomed[len(doomed)/2]
						doomed = slices.DeleteFunc(doomed, func(tk Token) bool { return tk.ID == d.ID })
						if err := s.DeleteToken(ctx, d.User, d.ID); err != nil {
							t.Fatal(err)
						}
					}
					clock.Advance(time.Second)
				}
				seen := map[string]int{}
				for _, tk := range walk(t, c.page, 4, churn) {
					seen[tk.ID]++
					if seen[tk.ID] > 1 {
						t.Errorf("token %s (%s) listed twice", tk.ID, tk.Name)
					}
				}
				for _, tk := range survivors {
					if c.keep(tk) && seen[tk.ID] != 1 {
						t.Errorf("token %s (%s of %s), there throughout, listed %d times", tk.ID, tk.Name, tk.User, seen[tk.ID])
					}
				}
				if created < 6 || len(doomed) > 6 {
					t.Fatalf("only %d tokens created and %d deleted during the walk", created, 9-len(doomed))
				}
			})
		}
	})
}

// TestPagingWhileUsersChange: users created and deleted between pages
// never make the list repeat or skip a user that existed throughout.
func TestPagingWhileUsersChange(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, _ := newTestStore(t, db)
		var keep []string
		for i := range 20 {
			name := fmt.Sprintf("user%02d", i*5)
			mustCreateUser(t, s, name, false)
			if i%3 != 0 {
				keep = append(keep, name)
			}
		}
		n := 0
		churn := func(int) {
			n++
			mustCreateUser(t, s, fmt.Sprintf("user%02d-new", n*7%100), false)
			victim := fmt.Sprintf("user%02d", (n*3%20)*5)
			if !slices.Contains(keep, victim) {
				_ = s.DeleteUser(ctxAs("root"), victim) // may be gone already
			}
		}
		seen := map[string]int{}
		users := func(c string, n int) ([]User, string, error) { return s.ListUsersPage(context.Background(), c, n) }
		for _, u := range walk(t, users, 3, churn) {
			if seen[u.Username]++; seen[u.Username] > 1 {
				t.Errorf("user %s listed twice", u.Username)
			}
		}
		for _, u := range keep {
			if seen[u] != 1 {
				t.Errorf("user %s, there throughout, listed %d times", u, seen[u])
			}
		}
	})
}

// TestPagingSkipsGoneTokens: index keys whose token is gone for callers
// (sessions past their expiry that the backend has not collected) are
// skipped without leaving short or empty pages.
func TestPagingSkipsGoneTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		mustCreateUser(t, s, "alice", false)
		var perm []string
		for i := range 5 {
			mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
			_, tk, _ := mustToken(t, s, "alice", fmt.Sprintf("p%d", i), Permanent, clock.Now().Add(10*day))
			perm = append(perm, tk.ID)
			mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
			clock.Advance(time.Second)
		}
		clock.Advance(2 * time.Hour)
		for name, page := range map[string]pager[Token]{
			"all": tokensPager(s, TokenFilter{}), "expiring": tokensPager(s, TokenFilter{ExpiringBefore: clock.Now().Add(30 * day)}),
			"alice's": userTokensPager(s, "alice"),
		} {
			for _, limit := range []int{1, 2, 3} {
				if got := ids(walk(t, page, limit, nil)); !slices.Equal(got, perm) {
					t.Errorf("%s, limit %d = %v; want only the permanent tokens %v", name, limit, got, perm)
				}
			}
		}
		if got, next, err := s.ListTokensPage(context.Background(), TokenFilter{Kind: Temporary}, "", 5); len(got) != 0 || next != "" || err != nil {
			t.Errorf("expired sessions = %d tokens, next %q, %v; want none and no next page", len(got), next, err)
		}
		// Live sessions after the ten gone ones, in one index: a page reads
		// past the gone ones to fill up.
		var live []string
		for range 3 {
			_, tk, _ := mustToken(t, s, "alice", "", Temporary, clock.Now().Add(time.Hour))
			live = append(live, tk.ID)
			clock.Advance(time.Second)
		}
		for name, page := range map[string]pager[Token]{
			"temporary":           tokensPager(s, TokenFilter{Kind: Temporary}),
			"temporary by expiry": tokensPager(s, TokenFilter{Kind: Temporary, ExpiringBefore: clock.Now().Add(day)}),
		} {
			for _, limit := range []int{1, 2, 3} {
				if got := ids(walk(t, page, limit, nil)); !slices.Equal(got, live) {
					t.Errorf("%s, limit %d = %v; want the live sessions %v", name, limit, got, live)
				}
			}
		}
	})
}

// cursorOf builds a cursor the way the store does, for tests of cursors
// the store never gave out.
func cursorOf(version, order byte, pos string) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{version, order}, pos...))
}

// TestPageCursorsRefused: a cursor that does not decode, or that belongs
// to another list, is refused with ErrInvalid and a message that says what
// to do, never a 500 or a silently wrong page.
func TestPageCursorsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := context.Background()
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		createUserTokens(t, s, clock.Now(), "alice", 3)
		createUserTokens(t, s, clock.Now(), "bob", 3)
		for i := range 3 {
			if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		next := func(what string, c string, err error) string {
			t.Helper()
			if err != nil || c == "" {
				t.Fatalf("%s: cursor %q, %v", what, c, err)
			}
			return c
		}
		_, c, err := s.ListTokensPage(ctx, TokenFilter{}, "", 1)
		tokensCursor := next("tokens", c, err)
		_, c, err = s.ListTokensPage(ctx, TokenFilter{ExpiringBefore: clock.Now().Add(400 * day)}, "", 1)
		expiryCursor := next("expiring", c, err)
		_, c, err = s.ListUserTokensPage(ctx, "alice", "", 1)
		aliceCursor := next("alice's tokens", c, err)
		_, c, err = s.ListUsersPage(ctx, "", 1)
		usersCursor := next("users", c, err)
		_, c, err = s.ListAuditPage(ctx, "", 1)
		auditCursor := next("audit", c, err)

		listTokens := func(c string) error { _, _, err := s.ListTokensPage(ctx, TokenFilter{}, c, 1); return err }
		listExpiring := func(c string) error {
			_, _, err := s.ListTokensPage(ctx, TokenFilter{ExpiringBefore: clock.Now()}, c, 1)
			return err
		}
		listBobs := func(c string) error { _, _, err := s.ListUserTokensPage(ctx, "bob", c, 1); return err }
		listUsers := func(c string) error { _, _, err := s.ListUsersPage(ctx, c, 1); return err }
		listAudit := func(c string) error { _, _, err := s.ListAuditPage(ctx, c, 1); return err }
		for _, c := range []struct {
			name, cursor string
			list         func(string) error
			mentions     string
		}{
			{"not base64", "not a cursor!", listTokens, "not a cursor of this API"},
			{"padded base64", tokensCursor + "==", listTokens, "not a cursor of this API"},
			{"empty position", cursorOf(1, 't', ""), listTokens, "not a cursor of this API"},
			{"another version", cursorOf(2, 't', "alice\x0012345678tok_1"), listTokens, "not a cursor of this API"},
			{"too long", cursorOf(1, 'u', strings.Repeat("a", 300)), listUsers, "not a cursor of this API"},
			{"users' cursor for tokens", usersCursor, listTokens, "another list"},
			{"tokens' cursor for users", tokensCursor, listUsers, "another list"},
			{"tokens' cursor for the expiry order", tokensCursor, listExpiring, "another list"},
			{"expiry cursor for the tokens", expiryCursor, listTokens, "another list"},
			{"all tokens' cursor for bob's", tokensCursor, listBobs, "another list"},
			{"alice's cursor for bob's", aliceCursor, listBobs, "another list"},
			{"audit cursor for users", auditCursor, listUsers, "another list"},
			{"users' cursor for the audit", usersCursor, listAudit, "another list"},
			{"bad username", cursorOf(1, 'u', "Alice/x"), listUsers, "another list"},
			{"bad token position", cursorOf(1, 't', "alice"), listTokens, "another list"},
			{"bad expiry position", cursorOf(1, 'e', "12345678xtok_1"), listExpiring, "another list"},
			{"short audit position", cursorOf(1, 'a', "123456781234567"), listAudit, "another list"},
		} {
			err := c.list(c.cursor)
			wantErr(t, err, ErrInvalid, c.mentions)
			if !strings.Contains(err.Error(), "cursor") {
				t.Errorf("%s: %q does not say the cursor is the problem", c.name, err)
			}
		}
		if toks, _, err := s.ListTokensPage(ctx, TokenFilter{ExpiringBefore: time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC)}, "", 10); len(toks) != 0 || err != nil {
			t.Errorf("tokens expiring before 1969 = %d, %v; want none", len(toks), err)
		}
		if toks, _, err := s.ListTokensPage(ctx, TokenFilter{ExpiringBefore: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, "", 10); len(toks) != 6 || err != nil {
			t.Errorf("tokens expiring before 9999 = %d, %v; want all 6", len(toks), err)
		}
		_, _, err = s.ListTokensPage(ctx, TokenFilter{Kind: "forever"}, "", 1)
		wantErr(t, err, ErrInvalid, "kind")
		_, _, err = s.ListUserTokensPage(ctx, "nobody", "", 1)
		wantErr(t, err, ErrNotFound, "nobody")
	})
}

// TestAuditPaging: the audit log pages newest first, and entries written
// while a client pages (newer than its cursor) neither repeat nor shift
// what it reads.
func TestAuditPaging(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s, clock := newTestStore(t, db)
		ctx := ctxAs("root")
		for i := range 23 {
			if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
			if i%5 == 0 {
				clock.Advance(time.Second) // some entries share a time: the sequence orders them
			}
		}
		want, err := s.ListAudit(ctx, 1000)
		if err != nil || len(want) != 23 || want[0].Target != "22" || want[22].Target != "0" {
			t.Fatalf("ListAudit = %d entries, %v", len(want), err)
		}
		page := func(c string, n int) ([]AuditEntry, string, error) {
			return s.ListAuditPage(context.Background(), c, n)
		}
		for _, limit := range []int{1, 4, 23, 100} {
			added := 0
			got := walk(t, page, limit, func(int) {
				added++
				if err := s.AppendAudit(ctx, AuditEntry{Action: ActionLoginFailed, Target: fmt.Sprintf("new-%d-%d", limit, added)}); err != nil {
					t.Fatal(err)
				}
			})
			var targets, wantTargets []string
			for i := range got {
				targets = append(targets, got[i].Target)
			}
			for i := range want {
				wantTargets = append(wantTargets, want[i].Target)
			}
			if !slices.Equal(targets, wantTargets) {
				t.Errorf("limit %d: %v; want %v", limit, targets, wantTargets)
			}
			want, _ = s.ListAudit(ctx, 1000)
		}
	})
}

// countingBackend counts the keys its readers visit: each key a scan
// passes to its callback and each key a Get or GetMany asks for.
type countingBackend struct {
	kv.Backend
	keys atomic.Int64
}

func (b *countingBackend) View(ctx context.Context, fn func(kv.Reader) error) error {
	return b.Backend.View(ctx, func(r kv.Reader) error { return fn(countingReader{r, &b.keys}) })
}

type countingReader struct {
	kv.Reader
	n *atomic.Int64
}

func (r countingReader) Get(key string) ([]byte, bool, error) {
	r.n.Add(1)
	return r.Reader.Get(key)
}

func (r countingReader) GetMany(keys []string, fn func(int, []byte) error) error {
	r.n.Add(int64(len(keys)))
	return r.Reader.GetMany(keys, fn)
}

func (r countingReader) Scan(prefix string, o kv.ScanOptions, fn func(key, val []byte) error) error {
	return r.Reader.Scan(prefix, o, func(key, val []byte) error {
		r.n.Add(1)
		return fn(key, val)
	})
}

// TestPagesReadOnlyWhatTheyShow: a page reads a number of keys bounded by
// its limit, whatever the store holds and wherever the page is: a filter
// by expiry or kind reads an index of just those tokens, not every token.
func TestPagesReadOnlyWhatTheyShow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		clock := testtools.NewFakeClock(t0)
		b := &countingBackend{Backend: db.backend(t, nil)}
		s, err := Open(context.Background(), b, Options{Clock: clock, PasswordCost: bcrypt.MinCost, LastUsedFlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		mustCreateUser(t, s, "alice", false)
		mustCreateUser(t, s, "bob", false)
		const n = 2000
		createUserTokens(t, s, clock.Now(), "alice", n) // expiries spread over a year
		for range 20 {
			mustToken(t, s, "bob", "", Temporary, clock.Now().Add(time.Hour))
		}
		const limit = 10
		// Per page: limit+1 index keys from each of at most two indexes,
		// their records, owners and last uses, and the user check.
		const most = 2*(limit+1) + 3*(limit+1) + 2
		cost := func(name string, page pager[Token], pages int) {
			t.Helper()
			cursor := ""
			for p := 1; p <= pages; p++ {
				b.keys.Store(0)
				got, next, err := page(cursor, limit)
				if err != nil || len(got) == 0 {
					t.Fatalf("%s page %d: %d tokens, %v", name, p, len(got), err)
				}
				if k := b.keys.Load(); k > most {
					t.Errorf("%s page %d read %d keys; want at most %d for %d tokens", name, p, k, most, limit)
				}
				if cursor = next; next == "" {
					break
				}
			}
		}
		cost("expiring within 30 days", tokensPager(s, TokenFilter{ExpiringBefore: clock.Now().Add(30 * day)}), 3)
		cost("expiring permanent", tokensPager(s, TokenFilter{ExpiringBefore: clock.Now().Add(30 * day), Kind: Permanent}), 3)
		cost("temporary", tokensPager(s, TokenFilter{Kind: Temporary}), 3)
		cost("all", tokensPager(s, TokenFilter{}), 3)
		cost("alice's", userTokensPager(s, "alice"), 3)
		cost("bob's", userTokensPager(s, "bob"), 3)

		// Deep in the list a page costs the same as the first.
		var cursor string
		for range 150 {
			_, cursor, err = s.ListTokensPage(context.Background(), TokenFilter{Kind: Permanent}, cursor, limit)
			if err != nil || cursor == "" {
				t.Fatalf("walking alice's tokens: %q, %v", cursor, err)
			}
		}
		b.keys.Store(0)
		if _, _, err := s.ListTokensPage(context.Background(), TokenFilter{Kind: Permanent}, cursor, limit); err != nil {
			t.Fatal(err)
		}
		if k := b.keys.Load(); k > most {
			t.Errorf("page 151 read %d keys; want at most %d", k, most)
		}
	})
}
