package admin

import (
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
		th.end("", ip, false)
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
	th.end("alice", "192.0.2.1", true) // one succeeds: alice's count is cleared
	if _, ok := th.begin("alice", "192.0.2.2"); !ok {
		t.Error("attempt after a success refused")
	}
}
