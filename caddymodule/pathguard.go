package caddymodule

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// pathTrickBody is the whole answer to a request refused by refusePathTricks,
// in the admin API's error shape.
var pathTrickBody = []byte(`{"error":"the request path must not contain encoded slashes, backslashes or dots, or . and .. segments"}` + "\n")

// refusePathTricks answers 400 and reports true when the path the client
// sent has dot segments or encoded slashes, backslashes or dots.
//
// Why: handle_path (strip_prefix) unescapes and cleans the path before the
// admin API sees it, so DELETE /users/alice/tokens/x%2F..%2F.. would arrive
// as DELETE /users/alice and delete the user. Authorization still applies
// to the resulting path, but a client that builds a URL from an untrusted
// ID must never act on a resource other than the one it named. No valid
// username, token ID or setting key contains these characters.
func refusePathTricks(w http.ResponseWriter, r *http.Request) bool {
	orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	if !ok || orig.URL == nil || !hasPathTricks(orig.URL.EscapedPath()) {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(pathTrickBody)
	return true
}

// hasPathTricks reports whether an escaped path has a "." or ".." segment
// or an encoded "/", "\" or ".".
func hasPathTricks(escaped string) bool {
	lower := strings.ToLower(escaped)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") {
		return true
	}
	for seg := range strings.SplitSeq(escaped, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
