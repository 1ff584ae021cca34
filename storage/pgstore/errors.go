package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// unavailable reports whether err means the database could not be
// reached, did not answer in time or cannot take writes now, as opposed
// to refusing a statement: a request that failed so may succeed later,
// and answers 503. A request whose client went away (its context
// cancelled) counts too: nobody reads the answer, and it is no server
// error.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, puddle.ErrClosedPool) || pgconn.Timeout(err) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"),                           // insufficient resources: disk full, out of memory, too many connections
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutting down, crash, cannot connect now
			pe.Code == "57014", // cancelled, by our own deadline
			pe.Code == "25006", // read-only transaction: the dsn reaches a standby (after a failover)
			pe.Code == "58030": // I/O error
			return true
		}
		return false
	}
	// A connection that broke mid-statement (pgx reports "conn closed",
	// "unexpected EOF" and friends as plain errors).
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "unexpected EOF")
}

// conflict reports whether err is a serialization failure or a deadlock:
// the transaction lost a race with another and may be run again.
func conflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// deadConnection reports whether err says the connection was closed under
// the transaction by the server (an administrator's pg_terminate_backend,
// a shutdown or a crash) or broke: not a timeout, which a new attempt
// would only repeat, and not a refusal of the statement.
func deadConnection(err error) bool {
	var de *dbError
	if !errors.As(err, &de) || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" || strings.HasPrefix(pe.Code, "08")
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || strings.Contains(err.Error(), "conn closed")
}
