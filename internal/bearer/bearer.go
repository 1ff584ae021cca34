// Package bearer reads the bearer token of a request's Authorization
// header and words the answers to a request without a valid one. The
// gateway (api_token_auth and the api_token provider) and the admin API
// share it, so the same header gets the same answer, with the same realm,
// everywhere. It has no Caddy dependency and allocates nothing.
package bearer

import (
	"strings"

	"github.com/apitokens/caddy-api-tokens/storage/verifier"
)

// Realm is the realm of every Bearer challenge (RFC 6750, section 3).
const Realm = "api_tokens"

// The two challenges of RFC 6750 section 3: without an error code when the
// request carried no bearer token at all, with invalid_token when it did.
const (
	ChallengeNoToken      = `Bearer realm="` + Realm + `"`
	ChallengeInvalidToken = `Bearer realm="` + Realm + `", error="invalid_token"`
)

// Result says what Parse found.
type Result uint8

const (
	// Found: exactly one Authorization header, carrying a bearer token.
	Found Result = iota
	// Missing: no Authorization header, another scheme (Basic, …), or
	// "Bearer" with nothing after it. RFC 6750 asks for a challenge
	// without an error code then.
	Missing
	// Multiple: more than one Authorization header. The field takes a
	// single value (RFC 9110, section 11.6.2), so a request with two is
	// refused whatever they hold: accepting the first would let a proxy
	// and the gateway disagree about which credential was used, and with
	// keep_authorization the upstream would receive both secrets.
	Multiple
)

// Parse extracts the token of "Authorization: Bearer <token>" from the
// request's Authorization values (r.Header["Authorization"]). The scheme
// is compared case-insensitively (RFC 9110, section 11.1), one space
// separates it from the token, and spaces and tabs around the token are
// ignored. The token itself is not checked here; storage does that.
func Parse(values []string) (token string, r Result) {
	switch len(values) {
	case 0:
		return "", Missing
	case 1:
	default:
		return "", Multiple
	}
	const scheme = "Bearer "
	header := values[0]
	// The usual spelling first: it costs a comparison of two words, and
	// EqualFold costs several times that on every request.
	if len(header) < len(scheme) || header[:len(scheme)] != scheme && !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", Missing
	}
	token = trimBlanks(header[len(scheme):])
	if token == "" {
		return "", Missing
	}
	return token, Found
}

// trimBlanks removes the spaces and tabs around s. strings.Trim does the
// same but builds its set of characters anew on every call, on every
// request.
func trimBlanks(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// VerifyResult is the api_tokens_auth_requests_total result a refusal for
// r is counted as: missing, or malformed for several headers. It is
// meaningless for Found.
func (r Result) VerifyResult() verifier.Result {
	if r == Multiple {
		return verifier.ResultMalformed
	}
	return verifier.ResultMissing
}

// Challenge is the WWW-Authenticate value for a request refused with
// result res: no error code when no token was sent, invalid_token
// otherwise (several headers count as a token sent, and malformed).
func Challenge(res verifier.Result) string {
	if res == verifier.ResultMissing {
		return ChallengeNoToken
	}
	return ChallengeInvalidToken
}

// ChallengeInsufficientScope is the WWW-Authenticate value of a 403 for a
// valid token that lacks what the route requires (RFC 6750 section 3.1):
// scope lists the required scopes, space-separated; "" for
// require_admin's, which names none.
func ChallengeInsufficientScope(scope string) string {
	c := `Bearer realm="api_tokens", error="insufficient_scope"`
	if scope != "" {
		c += `, scope="` + scope + `"`
	}
	return c
}

// MessageUnavailable is the answer of a fleet node that has not synced
// with the token database for longer than its max_staleness: it will not
// judge tokens on data that old. The request may succeed on another node,
// or on this one shortly.
const MessageUnavailable = "this gateway has lost touch with the token database for too long to trust what it holds; try again shortly"

// RetryAfter is the Retry-After of a 503 for an unavailable token
// database, in seconds: about how long a node takes to notice it is back.
const RetryAfter = "5"

// MessageMultiple tells the client what is wrong with a request that
// carries more than one Authorization header.
const MessageMultiple = "send one Authorization header, not several"

// Message tells the client, in a sentence it can act on, why its request
// was refused with res. It says no more than the holder of the token can
// know: a malformed and an unknown token read the same.
func Message(res verifier.Result) string {
	switch res {
	case verifier.ResultMissing:
		return "authentication required: send Authorization: Bearer <token>"
	case verifier.ResultExpired:
		return "token is expired"
	case verifier.ResultRevoked:
		return "token is revoked"
	case verifier.ResultDisabled:
		return "token is of a disabled user"
	case verifier.ResultUnavailable:
		return MessageUnavailable
	case verifier.ResultInsufficientScope, verifier.ResultNetworkNotAllowed:
		// Section 7's bodies are the error codes themselves, as RFC 6750's.
		return res.String()
	default:
		return "token is invalid"
	}
}
