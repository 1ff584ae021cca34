package admin

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Why a password check was refused, as Config.CountLoginRefusal is told.
const (
	LoginUnknownUser   = "unknown_user"   // no such user: counted and logged, never stored
	LoginWrongPassword = "wrong_password" // an existing user: wrong password, or the user is disabled
	LoginThrottled     = "throttled"      // refused by the login throttle before any check (429)
)

// unknownLogEvery is how often, at most, a node logs the failed logins
// for usernames that do not exist.
const unknownLogEvery = time.Minute

// unknownLoginLog logs failed logins for usernames that do not exist,
// at most one line per unknownLogEvery with how many there were, so a
// flood of made-up usernames shows in the log without filling it. The
// usernames themselves are never logged: one may be a pasted password.
type unknownLoginLog struct {
	mu      sync.Mutex
	logged  time.Time // when the last line was logged
	since   time.Time // the first failure not logged yet
	pending int       // failures not logged yet
}

func (l *unknownLoginLog) note(log *zap.Logger, now time.Time, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == 0 {
		l.since = now
	}
	l.pending++
	if !l.logged.IsZero() && now.Sub(l.logged) < unknownLogEvery {
		return
	}
	log.Warn("failed logins for usernames that do not exist (not stored in the audit log)",
		zap.Int("count", l.pending), zap.Time("since", l.since), zap.String("last_client_ip", addr))
	l.logged, l.pending = now, 0
}
