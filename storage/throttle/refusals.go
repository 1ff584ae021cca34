package throttle

import (
	"sync"
	"time"
)

// maxRemembered bounds the refusals a node remembers (about 100 bytes
// each). Past it, the oldest are not dropped; new ones are simply not
// remembered, and the database refuses them as before, at its cost.
const maxRemembered = 1 << 16

// refusals is what this node learned from the database about who is
// refused, and until when: a throttle key (an address's or a pair's)
// mapped to the end of its wait. An attempt whose address or pair is
// still waiting is refused from here, without a transaction, so a flood
// of refused logins costs the database nothing. The database stays the
// fleet's count: a node only remembers refusals it read there, so what
// it refuses from memory it would have refused anyway, unless a success
// elsewhere has since lifted them (End forgets those made here). A
// remembered refusal cannot outlast the wait it read.
type refusals struct {
	mu        sync.Mutex
	until     map[string]time.Time
	lastSweep time.Time
}

// wait returns how long the longer of the remembered refusals of the
// two keys has to run ("" is no key); 0 if neither is refused.
func (r *refusals) wait(now time.Time, key1, key2 string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.untilLocked(key1).Sub(now), r.untilLocked(key2).Sub(now), 0)
}

func (r *refusals) untilLocked(key string) time.Time {
	if key == "" {
		return time.Time{}
	}
	return r.until[key]
}

// remember records that key is refused for wait from now (nothing for
// no key or no wait).
func (r *refusals) remember(now time.Time, key string, wait time.Duration) {
	if key == "" || wait <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.until) >= maxRemembered {
		r.sweepLocked(now)
	}
	if len(r.until) < maxRemembered {
		r.until[key] = now.Add(wait)
	}
}

// sweepLocked drops the refusals that have run out, at most once a
// second, so a full memory under a flood of new keys does not scan
// itself on every refusal.
func (r *refusals) sweepLocked(now time.Time) {
	if now.Sub(r.lastSweep) < time.Second && !now.Before(r.lastSweep) {
		return
	}
	r.lastSweep = now
	for k, until := range r.until {
		if !now.Before(until) {
			delete(r.until, k)
		}
	}
}

func (r *refusals) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.until, key)
}
