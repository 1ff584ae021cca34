package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServesEmbeddedFilesWithTheirTypes(t *testing.T) {
	cases := []struct{ path, contentType, contains string }{
		{"/ui/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>API tokens</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "const API_BASE"},
		{"/ui/style.css", "text/css; charset=utf-8", ".topbar"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, c := range cases {
		res := get(t, http.MethodGet, c.path, nil)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d, want 200", c.path, res.StatusCode)
		}
		if got := res.Header.Get("Content-Type"); got != c.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.contentType)
		}
		if b := body(t, res); !strings.Contains(b, c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/missing.js"} {
		res := get(t, http.MethodGet, path, nil)
		h := res.Header
		csp := h.Get("Content-Security-Policy")
		for _, directive := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, directive) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, directive)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: CSP allows inline code: %q", path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: headers %v", path, h)
		}
	}
}

// The page must obey its own CSP: no inline script, style or event handler
// attributes, and no script that builds HTML from strings.
func TestPageHasNoInlineCodeOrHTMLInjection(t *testing.T) {
	html := body(t, get(t, http.MethodGet, "/ui/", nil))
	for _, bad := range []string{"<style", "style=", " onclick=", " onload=", "javascript:", "<script>"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html contains %q, which the CSP blocks", bad)
		}
	}
	js := body(t, get(t, http.MethodGet, "/ui/app.js", nil))
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q; build the DOM with textContent instead", bad)
		}
	}
}

func TestUnknownPathsAndDirectoriesAre404(t *testing.T) {
	for _, path := range []string{"/ui/nope.js", "/ui/static/", "/ui/static/app.js", "/ui/../ui.go", "/ui/./", "/ui/app.js/", "/app.js", "/"} {
		res := get(t, http.MethodGet, path, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, res.StatusCode)
		}
	}
}

func TestRevalidationWithETag(t *testing.T) {
	first := get(t, http.MethodGet, "/ui/app.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on app.js")
	}
	again := get(t, http.MethodGet, "/ui/app.js", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: status %d, want 304", again.StatusCode)
	}
	if other := get(t, http.MethodGet, "/ui/style.css", nil).Header.Get("ETag"); other == etag {
		t.Fatalf("app.js and style.css share the ETag %s", etag)
	}
}

func TestHeadAndMethods(t *testing.T) {
	head := get(t, http.MethodHead, "/ui/", nil)
	if head.StatusCode != http.StatusOK || body(t, head) != "" {
		t.Fatalf("HEAD /ui/: status %d with a body", head.StatusCode)
	}
	post := get(t, http.MethodPost, "/ui/", nil)
	if post.StatusCode != http.StatusMethodNotAllowed || post.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /ui/: status %d, Allow %q; want 405 and GET, HEAD", post.StatusCode, post.Header.Get("Allow"))
	}
}

// Whatever path is asked for, only the embedded files are ever served, each
// with its own bytes, and anything else is a plain 404: never a directory
// listing, a file outside static/, or a 5xx.
func FuzzHandlerServesOnlyEmbeddedFiles(f *testing.F) {
	for _, seed := range []string{"/ui/", "/ui/app.js", "/ui/../ui.go", "/ui/static/", "/ui/%2e%2e/ui.go", "/ui//app.js", "/ui/app.js\x00"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = path
		rec := httptest.NewRecorder()
		Handler().ServeHTTP(rec, req)
		name, _ := strings.CutPrefix(path, "/ui/")
		if path == "/ui/" {
			name = "index.html"
		}
		want, known := files[name]
		switch {
		case rec.Code == http.StatusOK && known && strings.HasPrefix(path, "/ui/"):
			if rec.Body.String() != string(want.body) {
				t.Fatalf("%q served other bytes than %s", path, name)
			}
		case rec.Code == http.StatusNotFound && !(known && strings.HasPrefix(path, "/ui/")):
		default:
			t.Fatalf("%q: status %d (known file %v)", path, rec.Code, known)
		}
	})
}
