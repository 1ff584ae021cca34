package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apitokens/caddy-api-tokens/storage"
)

func TestThrottleBoundsMemory(t *testing.T) {
	clock := storage.NewFakeClock(testStart)
	th := NewLoginThrottle(LoginThrottleConfig{MaxEntries: 10, Clock: clock})
	for i := range 100 {
		ip := "10.0.0." + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if _, ok := th.begin("", ip); !ok {
			t.Fatalf("first attempt from %s refused", ip)
		}
		th.end("", ip, attemptFailed)
		if n := th.len(); n > 10 {
			t.Fatalf("%d entries held; bound is 10", n)
		}
	}
	clock.Advance(15 * time.Minute)
	th.begin("", "192.0.2.1") // expired entries are dropped on the way
	if n := th.len(); n != 1 {
		t.Errorf("%d entries after the window passed; want 1", n)
	}
}

// TestThrottleCountsAttemptsInFlight: guesses sent in parallel must not all
// pass the check before the first failure is recorded.
func TestThrottleCountsAttemptsInFlight(t *testing.T) {
	th := NewLoginThrottle(LoginThrottleConfig{Clock: storage.NewFakeClock(testStart)})
	for i := range 5 {
		if _, ok := th.begin("alice", "192.0.2.1"); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	wait, ok := th.begin("alice", "192.0.2.2")
	if ok || wait != time.Second {
		t.Fatalf("6th parallel attempt = %v, %v; want refused with a 1s wait", wait, ok)
	}
	th.end("alice", "192.0.2.1", attemptSucceeded) // one succeeds: alice's count is cleared
	if _, ok := th.begin("alice", "192.0.2.2"); !ok {
		t.Error("attempt after a success refused")
	}
}

// TestThrottleSurvivesReload: a config reload builds a new handler with the
// same throttle, and must not hand an attacker a fresh budget.
func TestThrottleSurvivesReload(t *testing.T) {
	var cfg Config
	e := newEnv(t, func(c *Config) { cfg = *c })
	bad := `{"username":"root","password":"wrong"}`
	for range 5 {
		e.must(http.StatusUnauthorized, "POST", "/login", "", bad)
	}
	reloaded := httptest.NewServer(New(cfg))
	defer reloaded.Close()
	res, err := contract(t).Client(t, nil).Post(reloaded.URL+"/login", "application/json", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after a reload = %d; want 429", res.StatusCode)
	}
}
