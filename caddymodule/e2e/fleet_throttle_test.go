package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/internal/testtools"
)

// fromAddress is a client whose connections come from the loopback
// address ip (any 127.0.0.0/8 address is local on Linux), so Caddy sees a
// real, distinct client address: no forwarding header is involved.
func fromAddress(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

// loginFrom posts a login to node from ip and returns the answer.
func loginFrom(t *testing.T, node *site, ip, user, password string) answer {
	t.Helper()
	body := fmt.Sprintf(`{"username":%q,"password":%q}`, user, password)
	req, err := http.NewRequest(http.MethodPost, node.base()+"/login", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := fromAddress(ip).Do(req)
	if err != nil {
		t.Fatalf("login from %s: %v", ip, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return answer{res.StatusCode, res.Header, []byte(b.String())}
}

// Failures spread over the nodes of a fleet are throttled as if they were
// made on one node, and the attack does not keep the real user out: from
// the address she logged in from before she gets in at once, on any node.
func TestFleetLoginThrottle(t *testing.T) {
	nodes := startFleet(t, 3, testtools.PostgresDatabase(t), "")
	root := nodes[0].login(adminUser, adminPassword)
	nodes[0].call(root, http.MethodPost, "/users", map[string]any{"username": "alice", "password": "alice-password-1"}, http.StatusCreated, nil)
	const home = "127.0.0.10"
	if a := loginFrom(t, nodes[1], home, "alice", "alice-password-1"); a.status != http.StatusCreated {
		t.Fatalf("alice's first login: %s", a)
	}

	// One address guessing: five failures over three nodes block it on all.
	for i := range 5 {
		if a := loginFrom(t, nodes[i%3], "127.0.0.20", "alice", "guess"); a.status != http.StatusUnauthorized {
			t.Fatalf("guess %d on node %d: %s, want 401", i+1, i%3, a)
		}
	}
	for i, n := range nodes {
		a := loginFrom(t, n, "127.0.0.20", "alice", "alice-password-1")
		secs, _ := strconv.Atoi(a.header.Get("Retry-After"))
		if a.status != http.StatusTooManyRequests || secs < 890 || secs > 900 {
			t.Errorf("node %d after 5 failures elsewhere: %s Retry-After %q; want 429 for about 900s", i, a, a.header.Get("Retry-After"))
		}
	}

	// Many addresses guessing at once over every node, once the one-second
	// backoff the five failures earned has passed: one guess is checked,
	// whichever node gets it, and the backoff it starts refuses the rest
	// on every node, while alice logs in from home on every node.
	time.Sleep(1100 * time.Millisecond)
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			a := loginFrom(t, nodes[i%3], fmt.Sprintf("127.0.1.%d", i+1), "alice", fmt.Sprintf("guess-%d", i))
			mu.Lock()
			statuses[a.status]++
			mu.Unlock()
		})
	}
	for i, n := range nodes {
		if a := loginFrom(t, n, home, "alice", "alice-password-1"); a.status != http.StatusCreated {
			t.Errorf("alice from home on node %d during the attack: %s, want 201", i, a)
		}
	}
	wg.Wait()
	t.Logf("30 parallel guesses from 30 addresses over 3 nodes: %v", statuses)
	if n := statuses[http.StatusUnauthorized]; n < 1 || n > 2 || n+statuses[http.StatusTooManyRequests] != 30 {
		t.Errorf("parallel guesses: %v; want 1 (at most 2) checked (401), the rest 429", statuses)
	}
	for i, n := range nodes {
		if a := loginFrom(t, n, home, "alice", "alice-password-1"); a.status != http.StatusCreated {
			t.Errorf("alice from home on node %d after the attack: %s, want 201", i, a)
		}
	}
}
