package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// Floods of logins that fail, as an attacker sends them to a two-node
// fleet, cost the database next to nothing and the audit log a bounded
// number of rows, and do not slow revocations between the nodes.
func TestFleetLoginFloods(t *testing.T) {
	dsn := testtools.PostgresDatabase(t)
	nodes := startFleet(t, 2, dsn, "")
	a, b := nodes[0], nodes[1]
	root := a.login(adminUser, adminPassword)
	for _, user := range []string{"alice", "bob"} {
		a.call(root, http.MethodPost, "/users", map[string]any{"username": user, "password": user + "-password-1"}, http.StatusCreated, nil)
	}

	t.Run("refused logins make no transactions", func(t *testing.T) {
		const attacker = "127.0.0.30"
		for range 5 {
			if ans := loginFrom(t, b, attacker, "alice", "guess"); ans.status != http.StatusUnauthorized {
				t.Fatalf("a guess: %s", ans)
			}
		}
		before := transactions(t, dsn)
		refused, others := flood(t, 10*time.Second, func(i int) (*site, string, string, string) {
			return b, attacker, "alice", "guess"
		}, keepConnections{})
		time.Sleep(2 * time.Second) // PostgreSQL publishes a backend's counts within a second of its last transaction
		made := transactions(t, dsn) - before
		perRequest := float64(made) / float64(refused)
		t.Logf("10 s of refused logins from one address: %d answered 429, %d otherwise; %d transactions on the database meanwhile (both nodes, idle work included): %.4f per request",
			refused, others, made, perRequest)
		if others != 0 || refused < 1000 {
			t.Fatalf("%d refusals and %d other answers: not a flood of refusals", refused, others)
		}
		if perRequest >= 0.05 {
			t.Errorf("%.4f transactions per refused login; want under 0.05", perRequest)
		}
	})

	t.Run("unknown usernames add no audit row", func(t *testing.T) {
		// Strings that cannot be usernames cost no password hashing, so
		// they come fast; usernames that could exist but do not cost one.
		// The flood goes on until every one of 2,000 addresses has failed.
		before := failedLoginRows(t, a, root)
		var mu sync.Mutex
		from := map[string]bool{}
		everyAddress := make(chan struct{})
		_, failed := flood(t, time.Minute, func(i int) (*site, string, string, string) {
			user := fmt.Sprintf("No Such User %d", i)
			if i%100 == 0 {
				user = fmt.Sprintf("ghost-%d", i)
			}
			return nodes[i%2], loopback(i % 2000), user, "guess"
		}, everyAddress, func(ip string, status int) {
			if status != http.StatusUnauthorized {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !from[ip] {
				from[ip] = true
				if len(from) == 2000 {
					close(everyAddress)
				}
			}
		})
		after := failedLoginRows(t, a, root)
		t.Logf("%d failed logins for unknown usernames from %d addresses", failed, len(from))
		if len(from) < 2000 {
			t.Fatalf("failed logins from %d addresses; want all 2,000", len(from))
		}
		if len(after) != len(before) {
			t.Errorf("failed logins for unknown usernames added %d audit rows; want none", len(after)-len(before))
		}
	})

	t.Run("one user's failures are a row per address", func(t *testing.T) {
		// bob, whom nobody has attacked yet: the per-user backoff lets a
		// few failures through from new addresses, and up to 5 from each
		// address he logged in from (which skip the backoff): those make
		// one row each, with a count.
		homes := []string{"127.2.0.1", "127.2.0.2"}
		for _, home := range homes {
			if ans := loginFrom(t, a, home, "bob", "bob-password-1"); ans.status != http.StatusCreated {
				t.Fatalf("bob from %s: %s", home, ans)
			}
		}
		before := len(failedLoginRows(t, a, root))
		var mu sync.Mutex
		failedFrom := map[string]int{}
		flood(t, 5*time.Second, func(i int) (*site, string, string, string) {
			ip := loopback(2000 + i%2000)
			if i%4 == 0 {
				ip = homes[i/4%2]
			}
			return nodes[i%2], ip, "bob", fmt.Sprintf("guess-%d", i)
		}, func(ip string, status int) {
			if status == http.StatusUnauthorized {
				mu.Lock()
				failedFrom[ip]++
				mu.Unlock()
			}
		})
		rows := failedLoginRows(t, a, root)
		rows = rows[:len(rows)-before] // the new ones: newest first
		counted := 0
		for _, r := range rows {
			counted += max(r.Count, 1)
		}
		failures := 0
		for _, n := range failedFrom {
			failures += n
		}
		t.Logf("bob: %d failures from %d addresses (the rest waited for the per-user backoff), %d audit rows counting %d",
			failures, len(failedFrom), len(rows), counted)
		if failures < 5 || len(rows) > len(failedFrom) || counted != failures {
			t.Errorf("%d rows counting %d for %d failures from %d addresses; want at most a row per address, counting every failure",
				len(rows), counted, failures, len(failedFrom))
		}
		for _, home := range homes {
			var mine []auditRow
			for _, r := range rows {
				if r.ClientIP == home {
					mine = append(mine, r)
				}
			}
			if failedFrom[home] < 2 || len(mine) != 1 || mine[0].Count != failedFrom[home] {
				t.Errorf("%d failures from bob's address %s: rows %+v; want one row counting them all", failedFrom[home], home, mine)
			}
		}
	})

	t.Run("revocations during a flood", func(t *testing.T) {
		const deletions = 200
		tokens := make([]secretToken, 2*deletions)
		for i := range tokens {
			a.call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": fmt.Sprintf("flood-%d", i)}, http.StatusCreated, &tokens[i])
		}
		revoke := func(toks []secretToken) []time.Duration {
			var delays []time.Duration
			for _, tok := range toks {
				delays = append(delays, refusalDelays(t, []*site{b}, tok.Token, func() {
					a.call(root, http.MethodDelete, "/users/alice/tokens/"+tok.ID, nil, http.StatusNoContent, nil)
				})...)
			}
			return delays
		}
		idle := revoke(tokens[:deletions])
		stop := make(chan struct{})
		var refused atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			n, _ := flood(t, time.Hour, func(i int) (*site, string, string, string) {
				return nodes[i%2], "127.0.0.30", "alice", "guess"
			}, stop, keepConnections{})
			refused.Store(int64(n))
		})
		time.Sleep(500 * time.Millisecond)
		busy := revoke(tokens[deletions:])
		close(stop)
		wg.Wait()
		t.Logf("revocation from node A to node B, %d deletions each: idle p50 %v p99 %v max %v; during a flood of %d refused logins on both nodes p50 %v p99 %v max %v",
			deletions, percentile(idle, 50), percentile(idle, 99), slices.Max(idle),
			refused.Load(), percentile(busy, 50), percentile(busy, 99), slices.Max(busy))
		if worst := slices.Max(busy); worst >= time.Second {
			t.Errorf("a revocation took %v to reach the other node during the flood; the bound is 1s", worst)
		}
	})
}

// flood sends logins from 32 goroutines until d has passed (or a channel
// among opts closes), the i-th to the node, from the address, for the
// user and password that next(i) gives, and returns how many were
// answered 429 and how many otherwise. A func(ip, status) among opts is
// told every answer; with keepConnections among them, the connections
// are kept for the next request (one address sending thousands of
// requests a second would run out of ports otherwise; thousands of
// addresses would hold thousands of connections open).
func flood(t *testing.T, d time.Duration, next func(i int) (node *site, ip, user, password string), opts ...any) (refused, other int) {
	t.Helper()
	var stop <-chan struct{}
	var observe func(string, int)
	newClient := fromAddress
	for _, o := range opts {
		switch o := o.(type) {
		case chan struct{}:
			stop = o
		case func(string, int):
			observe = o
		case keepConnections:
			newClient = keepAliveFrom
		}
	}
	var i, nRefused, nOther atomic.Int64
	deadline := time.Now().Add(d)
	clients := sync.Map{} // one client per source address
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				node, ip, user, password := next(int(i.Add(1) - 1))
				c, ok := clients.Load(ip)
				if !ok {
					c, _ = clients.LoadOrStore(ip, newClient(ip))
				}
				status, err := postLogin(c.(*http.Client), node, user, password)
				if err != nil {
					t.Errorf("a login from %s: %v", ip, err)
					return
				}
				if observe != nil {
					observe(ip, status)
				}
				if status == http.StatusTooManyRequests {
					nRefused.Add(1)
				} else {
					nOther.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(nRefused.Load()), int(nOther.Load())
}

type keepConnections struct{}

// keepAliveFrom is a client whose connections come from ip and are kept,
// enough of them for every goroutine of a flood: a flood of new
// connections from one address would run out of its ports.
func keepAliveFrom(ip string) *http.Client {
	c := fromAddress(ip)
	tr := c.Transport.(*http.Transport)
	tr.DisableKeepAlives = false
	tr.MaxIdleConnsPerHost = 64
	return c
}

func postLogin(c *http.Client, node *site, user, password string) (int, error) {
	body := fmt.Sprintf(`{"username":%q,"password":%q}`, user, password)
	req, err := http.NewRequest(http.MethodPost, node.base()+"/login", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var buf [512]byte
	for {
		if _, err := res.Body.Read(buf[:]); err != nil {
			break
		}
	}
	return res.StatusCode, nil
}

// loopback is the i-th of a range of loopback addresses (127.1.0.0 up).
func loopback(i int) string { return fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250) }

// transactions is how many transactions PostgreSQL has counted on dsn's
// database, from every client.
func transactions(t *testing.T, dsn string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type auditRow struct {
	Action   string `json:"action"`
	Target   string `json:"target"`
	ClientIP string `json:"client_ip"`
	Count    int    `json:"count"`
}

// failedLoginRows lists the login_failed entries of the audit log, newest
// first.
func failedLoginRows(t *testing.T, node *site, token string) []auditRow {
	t.Helper()
	var all, failed []auditRow
	node.call(token, http.MethodGet, "/audit?limit=1000", nil, http.StatusOK, &all)
	for _, r := range all {
		if r.Action == "login_failed" {
			failed = append(failed, r)
		}
	}
	return failed
}
