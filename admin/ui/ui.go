// Package ui is the admin web page of API tokens for Caddy: plain HTML, CSS
// and JavaScript embedded in the binary, so it works offline with no CDN
// and no build step. It talks to the admin REST API it is mounted beside.
//
// The admin handler routes GET /ui/ to Handler with the path unchanged, so
// under `handle_path /api-tokens/*` the page is at /api-tokens/ui/ and the
// script finds the API at /api-tokens/.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy allows only this page's own files: no inline script
// or style (so injected markup cannot run), no framing (no clickjacking),
// and API calls only to the same origin.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// file is one embedded file, read once at start with its validator.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// contentTypes is fixed here rather than taken from the system's MIME table,
// which differs between machines; with nosniff a wrong type breaks the page.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// files maps a request name ("app.js") to its file. The set is fixed at
// build time, so only these names are ever served: no directory listing,
// no path tricks.
var files = loadFiles()

func loadFiles() map[string]file {
	root, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory exists
	}
	out := map[string]file{}
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		ct, known := contentTypes[path.Ext(name)]
		if !known {
			return fmt.Errorf("ui: no content type for %s; add it to contentTypes", name)
		}
		sum := sha256.Sum256(body)
		out[name] = file{
			body:        body,
			contentType: ct,
			etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}

// Handler serves the embedded page for request paths under /ui/: /ui/ is
// index.html, /ui/app.js the script, and any other path is 404. Every
// answer carries a strict Content-Security-Policy and asks the browser to
// revalidate (Cache-Control: no-cache with an ETag), so an upgrade is seen
// at once without re-downloading unchanged files.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	f, found := files[name]
	if !ok || !found {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("ETag", f.etag)
	// ServeContent answers If-None-Match with 304 and handles HEAD and
	// ranges; the zero modtime leaves Last-Modified out.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}
