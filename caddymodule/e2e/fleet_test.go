package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// The fleet: three Caddy processes built with the plugin, on one
// PostgreSQL database, as operators run them behind a load balancer.

func TestMain(m *testing.M) {
	code := m.Run()
	testtools.FinishPostgres()
	os.Exit(code)
}

// startFleet starts n Caddy nodes on the database dsn and waits until
// each serves. appCfg goes into every node's api_tokens block.
func startFleet(t *testing.T, n int, dsn, appCfg string) []*site {
	t.Helper()
	nodes := make([]*site, n)
	for i := range nodes {
		nodes[i] = newSite(t, "", "")
		nodes[i].dsn, nodes[i].appCfg = dsn, appCfg
		nodes[i].start()
	}
	for _, n := range nodes {
		n.waitReady()
	}
	return nodes
}

// refusalDelays runs act (which returns once its 2xx has arrived) while
// every node in watch is asked for the gateway with secret as fast as it
// answers, and returns, per node, how long after the 2xx the first 401
// (403 for a narrowed token) came (0 if it came before the 2xx arrived).
func refusalDelays(t *testing.T, watch []*site, secret string, act func()) []time.Duration {
	t.Helper()
	refused, _, acked := refusalTimes(t, watch, secret, act)
	delays := make([]time.Duration, len(refused))
	for i, at := range refused {
		delays[i] = max(at.Sub(acked), 0)
	}
	return delays
}

// refusalTimes runs act while every node in watch is asked for the gateway
// with secret as fast as it answers, and returns when each first answered
// 401, and when act was called and when it returned (its 2xx arrived).
func refusalTimes(t *testing.T, watch []*site, secret string, act func()) (refused []time.Time, sent, acked time.Time) {
	t.Helper()
	firstRefusal := make([]time.Time, len(watch))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range watch {
		wg.Go(func() {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				if st := n.gatewayAs(secret).status; st == http.StatusUnauthorized || st == http.StatusForbidden {
					firstRefusal[i] = time.Now()
					return
				}
			}
		})
	}
	sent = time.Now()
	act()
	acked = time.Now()
	// The watchers stop at the first refusal, or after 10s, which fails below.
	wg.Wait()
	close(stop)
	for i, at := range firstRefusal {
		if at.IsZero() {
			t.Fatalf("node %d still accepts the token 10s after the 2xx", i)
		}
	}
	return firstRefusal, sent, acked
}

// percentile returns the p-th percentile (0-100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// Every kind of refusal made on any node (a deleted token, a logout, a
// disabled or deleted user, a rotation without grace and the end of a
// rotation's grace) is refused on every other node within a second of the
// 2xx; a token created on one node passes on the others as soon as the
// creating call returned.
func TestFleetRefusalsReachEveryNodeWithinASecond(t *testing.T) {
	nodes := startFleet(t, 3, testtools.PostgresDatabase(t), "")
	root := nodes[0].login(adminUser, adminPassword)
	others := func(i int) []*site {
		var o []*site
		for j, n := range nodes {
			if j != i {
				o = append(o, n)
			}
		}
		return o
	}
	newUser := func(at *site, name string) secretToken {
		at.call(root, http.MethodPost, "/users", map[string]any{"username": name, "email": name + "@example.com", "password": name + "-password-1"}, http.StatusCreated, nil)
		var tok secretToken
		at.call(root, http.MethodPost, "/users/"+name+"/tokens", map[string]string{"name": "ci"}, http.StatusCreated, &tok)
		return tok
	}
	var all []time.Duration
	record := func(kind string, i int, ds []time.Duration) {
		t.Logf("%-14s on node %d: refused elsewhere after %v", kind, i, ds)
		all = append(all, ds...)
	}
	const rounds = 3
	for round := range rounds {
		for i, at := range nodes {
			name := fmt.Sprintf("u%d-%d", round, i)
			tok := newUser(at, name)
			// Created on one node, it passes at once on the others.
			for j, other := range others(i) {
				if a := other.gatewayAs(tok.Token); a.status != http.StatusOK {
					t.Fatalf("a token created on node %d gets %s on node %d right after", i, a, j)
				}
			}
			record("delete", i, refusalDelays(t, others(i), tok.Token, func() {
				at.call(root, http.MethodDelete, "/users/"+name+"/tokens/"+tok.ID, nil, http.StatusNoContent, nil)
			}))

			session := at.login(name, name+"-password-1")
			record("logout", i, refusalDelays(t, others(i), session, func() {
				at.call(session, http.MethodPost, "/logout", nil, http.StatusNoContent, nil)
			}))

			var tok2 secretToken
			at.call(root, http.MethodPost, "/users/"+name+"/tokens", map[string]string{"name": "ci2"}, http.StatusCreated, &tok2)
			record("disable user", i, refusalDelays(t, others(i), tok2.Token, func() {
				at.call(root, http.MethodPatch, "/users/"+name, map[string]any{"disabled": true}, http.StatusOK, nil)
			}))
			at.call(root, http.MethodPatch, "/users/"+name, map[string]any{"disabled": false}, http.StatusOK, nil)

			var rotated secretToken
			record("rotate, grace 0", i, refusalDelays(t, others(i), tok2.Token, func() {
				at.call(root, http.MethodPost, "/users/"+name+"/tokens/"+tok2.ID+"/rotate", map[string]string{"grace": "0s"}, http.StatusCreated, &rotated)
			}))

			// The grace ends on every node by its own clock, a second
			// after the rotation: not before the request was sent plus
			// the grace, and within a second of the end.
			const grace = time.Second
			var graced secretToken
			refused, sent, _ := refusalTimes(t, others(i), rotated.Token, func() {
				at.call(root, http.MethodPost, "/users/"+name+"/tokens/"+rotated.ID+"/rotate", map[string]string{"grace": "1s"}, http.StatusCreated, &graced)
			})
			ds := make([]time.Duration, len(refused))
			for j, r := range refused {
				if r.Before(sent.Add(grace)) {
					t.Errorf("the rotated token was refused %v after the rotation was sent, before its 1s grace ended", r.Sub(sent))
				}
				ds[j] = max(r.Sub(sent.Add(grace)), 0)
			}
			record("grace end", i, ds)

			record("delete user", i, refusalDelays(t, others(i), graced.Token, func() {
				at.call(root, http.MethodDelete, "/users/"+name, nil, http.StatusNoContent, nil)
			}))
		}
	}
	p50, p99, worst := percentile(all, 50), percentile(all, 99), slices.Max(all)
	t.Logf("%d refusals on other nodes after the 2xx: p50 %v, p99 %v, max %v", len(all), p50, p99, worst)
	if worst >= time.Second {
		t.Errorf("a refusal took %v to reach another node; the bound is 1s", worst)
	}
}

// Killing a node with SIGKILL right after its 2xx loses nothing: the
// change was committed before the answer, so the other nodes have it
// within the promised second, whatever became of the node that made it.
func TestFleetKillNineAfterTheAnswerLosesNothing(t *testing.T) {
	nodes := startFleet(t, 3, testtools.PostgresDatabase(t), "")
	root := nodes[0].login(adminUser, adminPassword)
	nodes[0].call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "email": "alice@example.com", "password": "alice-password-1"}, http.StatusCreated, nil)
	var doomed, kept secretToken
	nodes[0].call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "doomed"}, http.StatusCreated, &doomed)
	nodes[0].call(root, http.MethodPost, "/users/alice/tokens", map[string]string{"name": "kept"}, http.StatusCreated, &kept)
	nodes[0].call(root, http.MethodDelete, "/users/alice/tokens/"+doomed.ID, nil, http.StatusNoContent, nil)
	nodes[0].kill()
	wantAllRefused(t, nodes[1:], []secretToken{doomed}, time.Second)
	for i, n := range nodes[1:] {
		if a := n.gatewayAs(kept.Token); a.status != http.StatusOK {
			t.Errorf("node %d: the token created just before the kill gets %s", i+1, a)
		}
	}
}

// deletionStream deletes the tokens one after another through node at,
// retrying a deletion that got 503 (as a client would, after
// Retry-After), and returns once every one has been answered 204 (or 404:
// the retried deletion had been saved before the connection broke).
func deletionStream(t *testing.T, at *site, root string, user string, toks []secretToken) {
	t.Helper()
	for _, tok := range toks {
		deadline := time.Now().Add(60 * time.Second)
		for {
			a := raw(t, http.MethodDelete, at.base()+"/users/"+user+"/tokens/"+tok.ID, "Bearer "+root, nil)
			if a.status == http.StatusNoContent || a.status == http.StatusNotFound {
				break
			}
			if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
				t.Fatalf("deleting during the outage: %s (headers %v)", a, a.header)
			}
			if time.Now().After(deadline) {
				t.Fatalf("deletions kept failing for 60s: %s", a)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// createTokens gives user n permanent tokens through node at.
func createTokens(t *testing.T, at *site, root, user string, n int) []secretToken {
	t.Helper()
	at.call(root, http.MethodPost, "/users", map[string]any{"username": user, "email": user + "@example.com", "password": user + "-password-1"}, http.StatusCreated, nil)
	toks := make([]secretToken, n)
	for i := range toks {
		at.call(root, http.MethodPost, "/users/"+user+"/tokens", map[string]string{"name": fmt.Sprintf("t%d", i)}, http.StatusCreated, &toks[i])
	}
	return toks
}

// wantAllRefused waits up to limit for every node to refuse every token.
func wantAllRefused(t *testing.T, nodes []*site, toks []secretToken, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for i, n := range nodes {
		for _, tok := range toks {
			for n.gatewayAs(tok.Token).status != http.StatusUnauthorized {
				if time.Now().After(deadline) {
					t.Fatalf("node %d still accepts deleted token %s %v later", i, tok.ID, limit)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// Killing every database connection of the fleet, again and again, and
// restarting PostgreSQL, in the middle of a stream of deletions, loses
// none of them: every node refuses every deleted token.
func TestFleetLosesNoDeletionWhenConnectionsDieOrPostgresRestarts(t *testing.T) {
	cluster := testtools.StartPostgresCluster(t)
	dsn := cluster.CreateDatabase(t, "fleet")
	nodes := startFleet(t, 3, dsn, "")
	root := nodes[0].login(adminUser, adminPassword)
	toks := createTokens(t, nodes[0], root, "bulk", 90)

	admin, err := pgx.Connect(context.Background(), cluster.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	terminate := func() {
		if _, err := admin.Exec(context.Background(),
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'fleet'`); err != nil {
			t.Errorf("terminating the fleet's connections: %v", err)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(150 * time.Millisecond):
			}
			terminate()
		}
	})
	deletionStream(t, nodes[0], root, "bulk", toks[:30])
	close(done)
	wg.Wait()
	admin.Close(context.Background())

	restarted := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		restarted <- cluster.Restart()
	}()
	deletionStream(t, nodes[1], root, "bulk", toks[30:60])
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	deletionStream(t, nodes[2], root, "bulk", toks[60:])
	wantAllRefused(t, nodes, toks, 10*time.Second)
}

// While PostgreSQL is down the nodes keep verifying from memory, refuse
// garbage, answer admin writes 503 with Retry-After within seconds, and
// once it is back the writes work again and nothing of the refused ones
// appears. A node with max_staleness refuses tokens with 503 once it has
// not synced for that long.
func TestFleetWhilePostgresIsDown(t *testing.T) {
	cluster := testtools.StartPostgresCluster(t)
	dsn := cluster.CreateDatabase(t, "fleet")
	nodes := startFleet(t, 2, dsn, "")
	strict := newSite(t, "", "")
	strict.dsn, strict.appCfg = dsn, "max_staleness 2s"
	strict.start()
	strict.waitReady()
	root := nodes[0].login(adminUser, adminPassword)
	toks := createTokens(t, nodes[0], root, "alice", 1)
	garbage := "Bearer caddy_pat_" + strings.Repeat("x", 38)
	// Every node has the token before the database goes: one created an
	// instant before the outage may not have reached the others, which
	// then cannot know it.
	for i, n := range append(nodes, strict) {
		if a := n.gatewayAs(toks[0].Token); a.status != http.StatusOK {
			t.Fatalf("node %d: a valid token before the outage gets %s", i, a)
		}
	}

	cluster.Stop()
	down := time.Now()
	for i, n := range nodes {
		if a := n.gatewayAs(toks[0].Token); a.status != http.StatusOK {
			t.Errorf("node %d: a valid token while PostgreSQL is down gets %s", i, a)
		}
		if a := raw(t, http.MethodGet, n.gateway(), garbage, nil); a.status != http.StatusUnauthorized {
			t.Errorf("node %d: garbage while PostgreSQL is down gets %s", i, a)
		}
		start := time.Now()
		a := raw(t, http.MethodPost, n.base()+"/users", "Bearer "+root,
			strings.NewReader(`{"username":"never","email":"never@example.com","password":"never-password-1"}`), "Content-Type", "application/json")
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || !strings.Contains(string(a.body), "unavailable") {
			t.Errorf("node %d: a write while PostgreSQL is down gets %s (Retry-After %q)", i, a, a.header.Get("Retry-After"))
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("node %d: the write took %v to be refused", i, took)
		}
	}
	// The strict node stops trusting its memory after max_staleness.
	deadline := down.Add(10 * time.Second)
	for {
		a := strict.gatewayAs(toks[0].Token)
		if a.status == http.StatusServiceUnavailable && a.header.Get("Retry-After") != "" {
			t.Logf("the max_staleness 2s node answers 503 %v after PostgreSQL went down", time.Since(down).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node with max_staleness 2s still answers %s 10s after PostgreSQL went down", a)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a := raw(t, http.MethodGet, strict.gateway(), garbage, nil); a.status != http.StatusUnauthorized {
		t.Errorf("the stale node answers garbage with %s, want 401", a)
	}

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		a := raw(t, http.MethodPost, nodes[1].base()+"/users", "Bearer "+root,
			strings.NewReader(`{"username":"after","email":"after@example.com","password":"after-password-1"}`), "Content-Type", "application/json")
		if a.status == http.StatusCreated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes still fail 20s after PostgreSQL is back: %s", a)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var users []struct{ Username string }
	nodes[0].call(root, http.MethodGet, "/users", nil, http.StatusOK, &users)
	for _, u := range users {
		if u.Username == "never" {
			t.Errorf("a user whose creation was answered 503 exists after PostgreSQL came back")
		}
	}
	for deadline := time.Now().Add(10 * time.Second); strict.gatewayAs(toks[0].Token).status != http.StatusOK; {
		if time.Now().After(deadline) {
			t.Fatal("the strict node still refuses tokens 10s after PostgreSQL came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricOf reads one series of a node's /metrics; found is false when
// the node does not export it.
func metricOf(t *testing.T, s *site, series string) (v float64, found bool) {
	t.Helper()
	a := raw(t, http.MethodGet, "http://"+s.adminEP+"/metrics", "", nil)
	for line := range strings.SplitSeq(string(a.body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// In a fleet one node sends the expiry emails, every node answers the
// same faults, and when the sending node is killed another takes over
// within 30 seconds and sends what has come due since, once.
func TestFleetAlertsOneSenderSameFaultsAndFailOver(t *testing.T) {
	t.Setenv("E2E_SMTP_PASSWORD", "smtp-secret-e2e")
	mail := testtools.StartMailpit(t, 0)
	nodes := startFleet(t, 3, testtools.PostgresDatabase(t), smtpAppConfig(mail.SMTPPort))
	root := nodes[0].login(adminUser, adminPassword)
	nodes[0].call(root, http.MethodPost, "/users", map[string]any{"username": "ci-bot", "email": "ci@example.com", "password": "ci-bot-password-1"}, http.StatusCreated, nil)
	expiring := func(at *site, name string, in time.Duration) secretToken {
		var tok secretToken
		at.call(root, http.MethodPost, "/users/ci-bot/tokens", map[string]any{
			"name": name, "expires_at": time.Now().UTC().Add(in).Format(time.RFC3339),
		}, http.StatusCreated, &tok)
		return tok
	}
	first := expiring(nodes[1], "deploy", 5*24*time.Hour+time.Hour)
	nodes[2].call(root, http.MethodPut, "/settings/UserTokenExpirationNotificationEmails", map[string]string{"value": "ops@example.com"}, http.StatusOK, nil)
	nodes[1].call(root, http.MethodPut, "/settings/EnableUserTokenNotification", map[string]string{"value": "7"}, http.StatusOK, nil)

	set := time.Now()
	msgs := waitForMessages(t, mail, 1)
	t.Logf("the first email came %v after the setting", time.Since(set).Round(100*time.Millisecond))
	if !strings.Contains(msgs[0].Text, first.ID) {
		t.Fatalf("the email does not name the token:\n%s", msgs[0].Text)
	}
	// Exactly one node leads; every node reports the fault.
	var leader int
	leaders := 0
	for i, n := range nodes {
		if v, _ := metricOf(t, n, "api_tokens_leader"); v == 1 {
			leader, leaders = i, leaders+1
		}
		waitForSeries(t, n, "api_tokens_expiring_tokens", 1)
	}
	if leaders != 1 {
		t.Fatalf("%d nodes report api_tokens_leader 1, want 1", leaders)
	}
	var want []byte
	for i, n := range nodes {
		a := n.call(root, http.MethodGet, "/faults", nil, http.StatusOK, nil)
		if i == 0 {
			want = a.body
		} else if string(a.body) != string(want) {
			t.Errorf("node %d answers GET /faults with %s; node 0 with %s", i, a.body, want)
		}
	}
	time.Sleep(time.Second) // a second email would have arrived by now
	if n := len(mail.Messages(t)); n != 1 {
		t.Fatalf("%d emails from a fleet of three, want 1", n)
	}

	// The sender dies; a token comes due meanwhile. Another node takes
	// the lease over and emails it, within 30s.
	nodes[leader].kill()
	killed := time.Now()
	alive := slices.DeleteFunc(slices.Clone(nodes), func(n *site) bool { return n == nodes[leader] })
	second := expiring(alive[0], "nightly", 3*24*time.Hour)
	msgs = waitForMessages(t, mail, 2)
	took := time.Since(killed)
	t.Logf("the second email came %v after the sender was killed", took.Round(100*time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("fail-over took %v; the bound is 30s", took)
	}
	if newest := msgs[0].Text; !strings.Contains(newest, second.ID) || strings.Contains(newest, first.ID) { // newest first
		t.Errorf("the new sender's email should name only the new token:\n%s", newest)
	}
}

// Revocations hold within a second on nodes that are busy: nodes B and C
// each serve a valid token to 32 connections as fast as they can while
// tokens are deleted on node A, and every deletion is refused on B and C
// within a second of its 2xx, none lost.
func TestFleetRefusalsHoldWhileNodesAreBusy(t *testing.T) {
	nodes := startFleet(t, 3, testtools.PostgresDatabase(t), "")
	a, busy := nodes[0], nodes[1:]
	root := a.login(adminUser, adminPassword)
	a.call(root, http.MethodPost, "/users", map[string]any{"username": "ci", "email": "ci@example.com", "password": "ci-password-1"}, http.StatusCreated, nil)
	const deletions = 40
	tokens := make([]secretToken, deletions+1)
	for i := range tokens {
		a.call(root, http.MethodPost, "/users/ci/tokens", map[string]string{"name": fmt.Sprintf("t%d", i)}, http.StatusCreated, &tokens[i])
	}
	load, served := tokens[deletions], saturate(t, busy, tokens[deletions].Token)

	var all []time.Duration
	for _, tok := range tokens[:deletions] {
		all = append(all, refusalDelays(t, busy, tok.Token, func() {
			a.call(root, http.MethodDelete, "/users/ci/tokens/"+tok.ID, nil, http.StatusNoContent, nil)
		})...)
	}
	total := served()
	t.Logf("%d refusals on busy nodes after the 2xx: p50 %v, p99 %v, max %v; the busy nodes served %d requests meanwhile",
		len(all), percentile(all, 50), percentile(all, 99), slices.Max(all), total)
	if worst := slices.Max(all); worst >= time.Second {
		t.Errorf("a refusal took %v to reach a busy node; the bound is 1s", worst)
	}
	if total < 1000 {
		t.Errorf("the busy nodes served %d requests with %s: they were not busy", total, load.ID)
	}
}

// saturate has 32 connections per node ask each node for the gateway
// with token, as fast as it answers, until the test ends. served stops
// them and returns how many requests passed; any other answer fails the
// test.
func saturate(t *testing.T, nodes []*site, token string) (served func() int64) {
	t.Helper()
	var ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range nodes {
		c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
		for range 32 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest(http.MethodGet, n.gateway(), nil)
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := c.Do(req)
					if err != nil {
						t.Errorf("a busy node's request: %v", err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("a busy node answered %d to its valid token", resp.StatusCode)
						return
					}
					ok.Add(1)
				}
			})
		}
	}
	var once sync.Once
	served = func() int64 {
		once.Do(func() { close(stop); wg.Wait() })
		return ok.Load()
	}
	t.Cleanup(func() { served() })
	time.Sleep(time.Second) // busy before the first deletion
	return served
}
