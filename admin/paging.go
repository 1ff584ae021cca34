package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/apitokens/caddy-api-tokens/storage"
)

// The lists (GET /users, /users/{username}/tokens, /tokens and /audit)
// answer one page: a JSON array of at most limit items, and, when more
// follow, a Link header to the next page, as GitHub's and GitLab's APIs
// do:
//
//	Link: </api-tokens/tokens?cursor=AXQ...&limit=100>; rel="next"
//
// The cursor is opaque (the storage package makes it); the link repeats
// the request's path and query, so the filters stay, with the cursor of
// the next page. The last page has no Link.

// page is what a list request asks for: where to start and how many.
type page struct {
	cursor string
	limit  int
}

// pageQuery reads the limit and cursor parameters: a limit of 1 to
// storage.MaxPageLimit (default storage.DefaultPageLimit) and a cursor,
// which the store checks when it reads the page (an empty one is the
// first page).
func pageQuery(r *http.Request) (page, error) {
	q := r.URL.Query()
	p := page{cursor: q.Get("cursor"), limit: storage.DefaultPageLimit}
	if s, ok := q["limit"]; ok {
		n, err := strconv.Atoi(s[0])
		if err != nil || n < 1 || n > storage.MaxPageLimit || len(s) > 1 {
			return p, badRequest(fmt.Sprintf("limit must be a whole number from 1 to %d (default %d)", storage.MaxPageLimit, storage.DefaultPageLimit))
		}
		p.limit = n
	}
	if len(q["cursor"]) > 1 {
		return p, badRequest("cursor must be given at most once: pass the cursor of the Link header's next page, or none for the first page")
	}
	return p, nil
}

// writePage answers a page of a list: the items as a JSON array and, if
// next is not "", the link to the next page.
func (h *handler) writePage(w http.ResponseWriter, r *http.Request, items any, next string) {
	if next != "" {
		w.Header().Set("Link", "<"+h.nextURL(r, next)+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, items)
}

// nextURL is the request's URL, as the client sent it (before a proxy
// stripped a prefix), with the cursor of the next page: a path-absolute
// reference, so it works behind any host name or scheme. A path that
// starts with "//" would read as a host name; the reference is then the
// query alone, which resolves against the request's own URL.
func (h *handler) nextURL(r *http.Request, cursor string) string {
	q := r.URL.Query()
	q.Set("cursor", cursor)
	path := h.cfg.RequestPath(r)
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
		path = ""
	}
	return path + "?" + q.Encode()
}

// requestPath is the default Config.RequestPath: the path of the request
// line as the client sent it, which http.StripPrefix leaves alone, else
// the path the handler sees; escaped, as in a URL.
func requestPath(r *http.Request) string {
	if u, err := url.ParseRequestURI(r.RequestURI); err == nil && u.Path != "" {
		return u.EscapedPath()
	}
	return r.URL.EscapedPath()
}
