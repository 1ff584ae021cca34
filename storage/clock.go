package storage

import (
	"time"
)

// Clock tells the time. Everything that compares with "now" takes one, so
// tests can move a one-year expiry or a 30-day warning in milliseconds.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real wall clock, in UTC.
type SystemClock struct{}

// Now returns the current time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }
