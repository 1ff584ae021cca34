package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/apitokens/caddy-api-tokens/internal/bearer"
	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// refusal is everything the gateway answers to one kind of refused
// request, prepared once: a refusal then costs no formatting, no
// encoding and no allocation.
type refusal struct {
	result    verifier.Result // counted as this in api_tokens_auth_requests_total
	status    int             // 401; 403 for require_admin, require_scope and allowed networks; 503 for a node too stale to judge
	challenge string          // WWW-Authenticate; insufficient_scope on a 403 for what the route requires, none for a network or a 503
	retry     string          // Retry-After, on a 503
	body      []byte          // the direct answer, {"error":"…"} like the admin API's errors
	err       error           // the Caddy error's message with use_handle_errors ({err.message})
}

// messageForbidden is the 403's message.
const messageForbidden = "this route requires an administrator's API token"

var (
	// refusals holds the answer to each refused verification result,
	// indexed by verifier.Result; ResultOK's entry is unused.
	refusals = func() []refusal {
		all := verifier.AllResults()
		rs := make([]refusal, len(all))
		for _, res := range all {
			switch res {
			case verifier.ResultForbidden:
				rs[res] = newRefusal(res, http.StatusForbidden, bearer.ChallengeInsufficientScope(""), messageForbidden)
			case verifier.ResultInsufficientScope: // each route has its own, naming its scopes (newScopeRefusal)
				rs[res] = newScopeRefusal("")
			case verifier.ResultNetworkNotAllowed:
				rs[res] = newRefusal(res, http.StatusForbidden, "", bearer.Message(res))
			case verifier.ResultUnavailable:
				rs[res] = newRefusal(res, http.StatusServiceUnavailable, "", bearer.Message(res))
				rs[res].retry = bearer.RetryAfter
			default:
				rs[res] = newRefusal(res, http.StatusUnauthorized, bearer.Challenge(res), bearer.Message(res))
			}
		}
		return rs
	}()
	// refusalMultiple answers a request with more than one Authorization
	// header: counted as malformed, with its own message.
	refusalMultiple = newRefusal(verifier.ResultMalformed, http.StatusUnauthorized, bearer.ChallengeInvalidToken, bearer.MessageMultiple)
)

func newRefusal(res verifier.Result, status int, challenge, msg string) refusal {
	body, err := jsonLine(struct {
		Error string `json:"error"`
	}{msg})
	if err != nil {
		panic(err) // a constant string always encodes
	}
	return refusal{result: res, status: status, challenge: challenge, body: body, err: errors.New(msg)}
}

// jsonLine encodes v as one line of JSON.
func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}

// refusalFor is the answer to a header that carries no single bearer token.
func refusalFor(found bearer.Result) *refusal {
	if found == bearer.Multiple {
		return &refusalMultiple
	}
	return &refusals[verifier.ResultMissing]
}

// Canonical header keys, so indexing the header map needs no
// canonicalization (and no canonical copy of the key).
const (
	headerWWWAuthenticate     = "Www-Authenticate"
	headerContentType         = "Content-Type"
	headerContentTypeOptions  = "X-Content-Type-Options"
	headerRetryAfter          = "Retry-After"
	headerAuthorization       = "Authorization"
	contentTypeJSON           = "application/json"
	contentTypeOptionsNoSniff = "nosniff"
)

// writeRefusal answers the request with rf: status, challenge and body.
// The body is one shared slice: ResponseWriter.Write must not modify it.
func writeRefusal(w http.ResponseWriter, rf *refusal) {
	h := w.Header()
	s := takeHeaderSlab(3)
	if rf.challenge != "" {
		h[headerWWWAuthenticate] = s.value(rf.challenge)
	}
	if rf.retry != "" {
		h[headerRetryAfter] = s.value(rf.retry)
	}
	h[headerContentType] = s.value(contentTypeJSON)
	h[headerContentTypeOptions] = s.value(contentTypeOptionsNoSniff)
	s.release()
	w.WriteHeader(rf.status)
	_, _ = w.Write(rf.body)
}

// setChallenge sets rf's WWW-Authenticate (or Retry-After) header, if it
// has one, for an answer that someone else writes (Caddy's error
// handling, or caddyauth).
func setChallenge(h http.Header, rf *refusal) {
	if rf.challenge == "" && rf.retry == "" {
		return
	}
	s := takeHeaderSlab(1)
	if rf.challenge != "" {
		h[headerWWWAuthenticate] = s.value(rf.challenge)
	} else {
		h[headerRetryAfter] = s.value(rf.retry)
	}
	s.release()
}

// A response header's value is a []string, and Header().Set allocates a
// new one for every response. A refusal must not allocate (a flood of
// garbage tokens should cost the gateway as little as possible), yet a
// value slice cannot be shared between responses either: handlers edit
// header values in place. Caddy's `header` directive does, for a
// replacement (`header Www-Authenticate api_tokens example` rewrites
// hdr[name][i]), and it runs on our response whenever its response
// operations are deferred: with `defer`, with a response matcher, or with
// a `-Field` deletion in the same block, which is common (`-Server`). Its
// `*` replacement writes every value of every header. On a shared
// package-level slice such an edit would race with every other response
// being written and change the challenge of all later ones. That is not
// hypothetical for a refusal: a site that renames the realm or hardens
// its headers does exactly this.
//
// So every value slice is owned by exactly one response, and the
// allocation is amortized instead: values are cut from a slab of 64
// strings, each handed out once and never written again by us, capped
// at length 1 (an append by a later handler copies instead of writing
// into the next value). One slab serves 21 refusals; it is freed when
// the last response holding a value from it is gone. The pool keeps a
// partly used slab per P, so taking values needs no lock.
type headerSlab struct {
	vals [64]string
	used int
}

var headerSlabs = sync.Pool{New: func() any { return new(headerSlab) }}

// takeHeaderSlab returns a slab with at least n unused values; release it
// once the values are taken.
func takeHeaderSlab(n int) *headerSlab {
	s := headerSlabs.Get().(*headerSlab)
	if len(s.vals)-s.used < n {
		// Nearly used up: let it go (the responses holding its values
		// keep it alive as long as they need) and start a new one.
		s = new(headerSlab)
	}
	return s
}

// value returns a one-element value slice holding v, owned by the caller.
func (s *headerSlab) value(v string) []string {
	i := s.used
	s.used++
	s.vals[i] = v
	return s.vals[i : i+1 : i+1]
}

// release returns the slab to the pool unless it is used up.
func (s *headerSlab) release() {
	if s.used < len(s.vals) {
		headerSlabs.Put(s)
	}
}
