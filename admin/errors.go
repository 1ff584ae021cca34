package admin

import (
	"errors"
	"net/http"
	"strings"

	"github.com/apitokens/caddy-api-tokens/internal/bearer"
	"github.com/apitokens/caddy-api-tokens/storage"
)

// apiError is an error the client can act on: it carries the HTTP status and
// the message sent as {"error": "..."}. Handlers return it (or a storage
// error, which statusOf maps); writeError turns it into a response once.
type apiError struct {
	status int
	msg    string
	header http.Header // extra response headers, e.g. Retry-After
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, msg string) *apiError { return &apiError{status: status, msg: msg} }

func badRequest(msg string) *apiError { return newError(http.StatusBadRequest, msg) }

var errForbiddenAdmin = newError(http.StatusForbidden, "this action needs an administrator")

// storageStatuses maps the storage sentinels to HTTP statuses.
var storageStatuses = []struct {
	err    error
	status int
}{
	{storage.ErrNotFound, http.StatusNotFound},
	{storage.ErrConflict, http.StatusConflict},
	{storage.ErrLastAdmin, http.StatusConflict},
	{storage.ErrInvalid, http.StatusBadRequest},
	{storage.ErrBadLogin, http.StatusUnauthorized},
}

// unavailable answers a failure to reach the database: 503 with
// Retry-After, and a message that says nothing was changed unless the
// store said the outcome is unknown.
func unavailable(err error) *apiError {
	e := newError(http.StatusServiceUnavailable, "the token database is unavailable; nothing was changed, try again shortly")
	if strings.Contains(err.Error(), "check before retrying") {
		e.msg = "the token database connection broke while saving; the change may or may not have been saved: check before retrying"
	}
	e.header = http.Header{"Retry-After": {bearer.RetryAfter}}
	return e
}

// clientError converts err into the apiError the client sees, or returns
// nil if err is not the client's doing (the caller then answers 500).
func clientError(err error) *apiError {
	if ae, ok := errors.AsType[*apiError](err); ok {
		return ae
	}
	if errors.Is(err, storage.ErrUnavailable) {
		return unavailable(err)
	}
	for _, m := range storageStatuses {
		if errors.Is(err, m.err) {
			return newError(m.status, storageMessage(err, m.err))
		}
	}
	return nil
}

// storageMessage returns the store's message without the sentinel's own
// text when the store wrapped it as "<sentinel>: <detail>", so a client
// reads `unknown setting key "x"` rather than `invalid: unknown setting ...`.
func storageMessage(err, sentinel error) string {
	msg := err.Error()
	if detail, ok := strings.CutPrefix(msg, sentinel.Error()+": "); ok && detail != "" {
		return detail
	}
	return msg
}

// afterAnswer is an error answered at once, with work (then) done once the
// answer is sent, which the client does not wait for.
type afterAnswer struct {
	error
	then func()
}

func (a *afterAnswer) Unwrap() error { return a.error }
