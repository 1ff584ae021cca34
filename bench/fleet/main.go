// Command fleet measures how fast a revocation made on one node of a fleet
// reaches the others: it starts three Caddy nodes (the binary built with
// the plugin) on one PostgreSQL database, deletes tokens one at a time,
// round robin across the nodes, and for each deletion times, on each other
// node, from the 2xx of the DELETE to the first 401 for the deleted token,
// with every other node asked as fast as it answers. With -kill it also
// terminates every database connection of the fleet every 200ms during
// the run. With -from-a every deletion is made on node A and timed on B
// and C, node by node; with -load too, B and C each serve a valid token
// at saturation (wrk -t1 -c32) meanwhile, as a busy fleet does.
// bench/fleet.sh runs it; see docs/performance.md.
//
//	go run ./bench/fleet -caddy ./caddy -dsn postgres://... -deletions 1000
//	go run ./bench/fleet -caddy ./caddy -dsn postgres://... -deletions 1000 -from-a -load
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	adminUser     = "bench-admin"
	adminPassword = "bench-admin-password"
)

func main() {
	caddyBin := flag.String("caddy", "./caddy", "Caddy built with the plugin")
	dsn := flag.String("dsn", "", "an empty PostgreSQL database for the fleet")
	adminDSN := flag.String("admin-dsn", "", "a connection that may terminate the fleet's connections (with -kill)")
	deletions := flag.Int("deletions", 1000, "deletions to time")
	kill := flag.Bool("kill", false, "terminate every connection of the fleet every 200ms during the run")
	fromA := flag.Bool("from-a", false, "make every deletion on node A, and report B and C apart")
	load := flag.Bool("load", false, "with -from-a: B and C serve a valid token at saturation meanwhile (needs wrk)")
	flag.Parse()
	if *dsn == "" || (*kill && *adminDSN == "") {
		flag.Usage()
		os.Exit(2)
	}
	work, err := os.MkdirTemp("", "api-tokens-fleet-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	for i := range 3 {
		n, err := startNode(*caddyBin, *dsn, filepath.Join(work, fmt.Sprint(i)))
		if err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	root, err := nodes[0].login()
	if err != nil {
		log.Fatal(err)
	}
	tokens, err := createTokens(nodes, root, *deletions, "t")
	if err != nil {
		log.Fatal(err)
	}
	stopKill := func() {}
	if *kill {
		stopKill = killConnections(*adminDSN, *dsn)
	}
	mode := "steady"
	switch {
	case *kill:
		mode = "connections killed every 200ms"
	case *load:
		mode = "B and C busy"
	case *fromA:
		mode = "idle"
	}
	if *load {
		busy, err := createTokens(nodes[:1], root, 1, "busy")
		if err != nil {
			log.Fatal(err)
		}
		stopLoad := saturate(nodes[1:], busy[0].Token)
		defer stopLoad()
	}
	delays, retries, err := timeDeletions(nodes, root, tokens, *fromA)
	stopKill()
	if err != nil {
		log.Fatal(err)
	}
	if *fromA {
		for i, name := range []string{"B", "C"} {
			report(mode+", node "+name, delays[i], retries)
		}
		return
	}
	report(mode, slices.Concat(delays...), retries)
}

// saturate runs wrk -t1 -c32 with token against each node until the
// returned function is called.
func saturate(nodes []*node, token string) (stop func()) {
	var cmds []*exec.Cmd
	for _, n := range nodes {
		cmd := exec.Command("wrk", "-t1", "-c32", "-d1h", "-H", "Authorization: Bearer "+token, n.gateway())
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			log.Fatalf("starting wrk: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(2 * time.Second) // at full speed before the first deletion
	return func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
}

// node is one Caddy of the fleet.
type node struct {
	cmd  *exec.Cmd
	port int
}

func (n *node) base() string    { return fmt.Sprintf("http://127.0.0.1:%d/api-tokens", n.port) }
func (n *node) gateway() string { return fmt.Sprintf("http://127.0.0.1:%d/app", n.port) }

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNode(bin, dsn, dir string) (*node, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	n := &node{port: freePort()}
	cfg := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}
	api_tokens {
		storage postgres {
			dsn {env.FLEET_DSN}
		}
		bootstrap_admin %s %s
	}
}
http://127.0.0.1:%d {
	handle_path /api-tokens/* {
		api_token_admin
	}
	handle {
		api_token_auth
		respond "ok"
	}
}
`, adminUser, adminPassword, n.port)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		return nil, err
	}
	n.cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	n.cmd.Env = append(os.Environ(), "FLEET_DSN="+dsn, "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	// A node must not outlive the benchmark, even one killed by a
	// timeout: left running, it would load the machine's next run.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(n.gateway()); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return n, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.stop()
	out, _ := os.ReadFile(filepath.Join(dir, "caddy.log"))
	return nil, fmt.Errorf("caddy did not serve within 60s:\n%s", out)
}

func (n *node) stop() {
	if n.cmd.Process != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
	}
}

// client makes a new connection per request, as a poller that must not
// wait behind another request on a shared connection.
var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func call(method, url, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (n *node) login() (string, error) {
	status, b, err := call(http.MethodPost, n.base()+"/login", "", map[string]string{"username": adminUser, "password": adminPassword})
	if err != nil || status != http.StatusCreated {
		return "", fmt.Errorf("login: %d %s %v", status, b, err)
	}
	var out struct{ Token string }
	return out.Token, json.Unmarshal(b, &out)
}

type token struct{ Token, ID string }

// createTokens creates n permanent tokens of user bench (created with the
// first), named prefix0, prefix1, …, round robin over the nodes.
func createTokens(nodes []*node, root string, n int, prefix string) ([]token, error) {
	status, b, err := call(http.MethodPost, nodes[0].base()+"/users", root, map[string]any{"username": "bench", "email": "bench@example.com", "password": "bench-password-1"})
	if err != nil || status != http.StatusCreated && status != http.StatusConflict {
		return nil, fmt.Errorf("creating the user: %d %s %v", status, b, err)
	}
	tokens := make([]token, n)
	for i := range tokens {
		at := nodes[i%len(nodes)]
		status, b, err := call(http.MethodPost, at.base()+"/users/bench/tokens", root, map[string]string{"name": fmt.Sprintf("%s%d", prefix, i)})
		if err != nil || status != http.StatusCreated {
			return nil, fmt.Errorf("creating token %d: %d %s %v", i, status, b, err)
		}
		if err := json.Unmarshal(b, &tokens[i]); err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// timeDeletions deletes each token through node i%3 (or node A, with
// fromA) and returns, for each other node, the times from the DELETE's
// 2xx to its first 401, in the order the other nodes come, and how many
// DELETEs had to be retried after a 503.
func timeDeletions(nodes []*node, root string, tokens []token, fromA bool) ([][]time.Duration, int, error) {
	delays := make([][]time.Duration, len(nodes)-1)
	retries := 0
	for i, tok := range tokens {
		at := nodes[i%len(nodes)]
		if fromA {
			at = nodes[0]
		}
		var watch []*node
		for _, n := range nodes {
			if n != at {
				watch = append(watch, n)
			}
		}
		refused := make([]time.Time, len(watch))
		var wg sync.WaitGroup
		for j, n := range watch {
			wg.Go(func() {
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					if status, _, err := call(http.MethodGet, n.gateway(), tok.Token, nil); err == nil && status == http.StatusUnauthorized {
						refused[j] = time.Now()
						return
					}
				}
			})
		}
		var acked time.Time
		for {
			status, b, err := call(http.MethodDelete, at.base()+"/users/bench/tokens/"+tok.ID, root, nil)
			if err == nil && (status == http.StatusNoContent || status == http.StatusNotFound) {
				acked = time.Now()
				break
			}
			if err == nil && status != http.StatusServiceUnavailable {
				return nil, retries, fmt.Errorf("deleting token %d: %d %s", i, status, b)
			}
			retries++
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		for j, at := range refused {
			if at.IsZero() {
				return nil, retries, fmt.Errorf("token %d is still accepted by a node 30s after its deletion", i)
			}
			delays[j] = append(delays[j], max(at.Sub(acked), 0))
		}
	}
	return delays, retries, nil
}

// killConnections terminates every connection to the fleet's database
// every 200ms until the returned function is called.
func killConnections(adminDSN, dsn string) func() {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), adminDSN)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		defer conn.Close(context.Background())
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			_, _ = conn.Exec(context.Background(),
				`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, cfg.Database)
		}
	}()
	return func() { close(done); <-stopped }
}

func report(mode string, delays []time.Duration, retries int) {
	slices.Sort(delays)
	pct := func(p float64) time.Duration { return delays[int(float64(len(delays)-1)*p/100)] }
	over := 0
	for _, d := range delays {
		if d >= time.Second {
			over++
		}
	}
	fmt.Printf("%s: %d refusals: p50 %s, p99 %s, max %s, over 1s %d, DELETEs retried after 503: %d\n",
		mode, len(delays), round(pct(50)), round(pct(99)), round(delays[len(delays)-1]), over, retries)
	if over > 0 {
		fmt.Println(strings.Repeat("!", 3), "some refusals took a second or more")
		os.Exit(1)
	}
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
