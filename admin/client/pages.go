package client

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
)

// The server's page sizes: its default and its largest.
const (
	defaultPage = 100
	maxPage     = 1000
)

// list yields the items of the list at path, a page at a time: the first
// page from path and query, then each next one from the Link header of
// the answer before, until an answer has none. An error is yielded once,
// as the last value.
func list[T any](ctx context.Context, c *Client, path string, query url.Values) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		u, err := c.firstPage(path, query)
		if err != nil {
			yield(zero, err)
			return
		}
		for u != nil {
			var items []T
			header, err := c.send(ctx, http.MethodGet, u, path, nil, &items, true)
			if err == nil {
				u, err = nextPage(u, header, path)
			}
			if err != nil {
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
		}
	}
}

// firstPage is the URL of a list's first page, of PageSize items.
func (c *Client) firstPage(path string, query url.Values) (*url.URL, error) {
	u, err := c.url(path)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if c.PageSize != 0 {
		if c.PageSize < 1 || c.PageSize > maxPage {
			return nil, fmt.Errorf("page size %d is not from 1 to %d", c.PageSize, maxPage)
		}
		q.Set("limit", strconv.Itoa(c.PageSize))
	}
	u.RawQuery = q.Encode()
	return u, nil
}

var linkNext = regexp.MustCompile(`<([^<>]*)>\s*;\s*rel="?next"?`)

// nextPage is the URL in an answer's Link: <...>; rel="next" header,
// resolved against the URL of the request (RFC 8288), or nil when there is
// none. The bearer token goes with the request, so a link to another
// host or scheme is refused, not followed.
func nextPage(from *url.URL, header http.Header, path string) (*url.URL, error) {
	for _, h := range header.Values("Link") {
		m := linkNext.FindStringSubmatch(h)
		if m == nil {
			continue
		}
		ref, err := url.Parse(m[1])
		if err != nil {
			return nil, fmt.Errorf("GET %s: the Link header's next page %q is not a URL", path, m[1])
		}
		next := from.ResolveReference(ref)
		if next.Scheme != from.Scheme || next.Host != from.Host {
			return nil, fmt.Errorf("GET %s: the next page is on another server (%s://%s); not sending the token there", path, next.Scheme, next.Host)
		}
		return next, nil
	}
	return nil, nil
}

// collect gathers a list's items, at most max of them (0: all).
func collect[T any](items iter.Seq2[T, error], max int) ([]T, error) {
	out := []T{}
	for it, err := range items {
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		if len(out) == max {
			break
		}
	}
	return out, nil
}
