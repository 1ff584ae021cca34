package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// What the server or the connection says decides between 503 (try again
// later) and a refusal: an outage, a failover to a standby, a full disk
// or a client that went away is no server error.
func TestUnavailableErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "08006"}, true},  // connection failure
		{&pgconn.PgError{Code: "57P01"}, true},  // admin shutdown
		{&pgconn.PgError{Code: "53100"}, true},  // disk full
		{&pgconn.PgError{Code: "53200"}, true},  // out of memory
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "25006"}, true},  // read-only transaction: a standby
		{&pgconn.PgError{Code: "58030"}, true},  // I/O error
		{&pgconn.PgError{Code: "57014"}, true},  // cancelled by our deadline
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation: a bug, not an outage
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined table
		{fmt.Errorf("reading: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("reading: %w", context.Canceled), true},
		{errors.New("conn closed"), true},
		{errors.New("storage: corrupt user record"), false},
	} {
		if got := unavailable(c.err); got != c.want {
			t.Errorf("unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
