// Package dashboard owns the admin dashboard: the React application in this
// directory (built by `make dashboard` into dist/) and the HTTP handler that
// serves it from the Go binary, embedded with go:embed. `ccproxy admin`
// mounts the handler at / beside the API at /api/v1, so the dashboard is
// same-origin with the API and authenticates with the session cookie and
// the CSRF double-submit token, never with a token kept in the browser.
//
// A clean clone builds without Node: dist/ then holds only a marker file and
// the handler serves a page saying the dashboard was not built (Built
// reports false).
package dashboard

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

//go:embed placeholder.html
var placeholder []byte

// csp allows only the dashboard's own scripts and the API of its own
// origin. Inline style attributes are allowed: the chart library sets them.
const csp = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Built reports whether the binary holds the built dashboard rather than
// the placeholder.
func Built() bool {
	_, err := fs.Stat(dist, "dist/index.html")
	return err == nil
}

// Handler serves the dashboard: files under /assets/ (content-hashed names,
// cached for a year, gzip-compressed when the browser accepts it) and, for
// every other path, index.html, so that deep links work; the application's
// router reads the path.
func Handler() http.Handler {
	root, _ := fs.Sub(dist, "dist")
	index, err := fs.ReadFile(root, "index.html")
	if err != nil {
		index = placeholder
	}
	indexGz, _ := fs.ReadFile(root, "index.html.gz")
	return &handler{root: root, index: index, indexGz: indexGz}
}

type handler struct {
	root           fs.FS
	index, indexGz []byte
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
	if strings.HasPrefix(p, "assets/") {
		// The .gz twins are an encoding of their asset, not assets.
		if !strings.HasSuffix(p, ".gz") && h.serveFile(w, r, p) {
			return
		}
		http.NotFound(w, r)
		return
	}
	// The application shell: never cached, so a new release is picked up
	// at the next navigation.
	hd.Set("Content-Security-Policy", csp)
	hd.Set("Cache-Control", "no-cache")
	h.serveBytes(w, r, "index.html", h.index, h.indexGz)
}

// serveFile serves an embedded asset, reporting false when there is none.
func (h *handler) serveFile(w http.ResponseWriter, r *http.Request, name string) bool {
	b, err := fs.ReadFile(h.root, name)
	if err != nil {
		return false
	}
	gz, _ := fs.ReadFile(h.root, name+".gz")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	h.serveBytes(w, r, name, b, gz)
	return true
}

func (h *handler) serveBytes(w http.ResponseWriter, r *http.Request, name string, b, gz []byte) {
	w.Header().Add("Vary", "Accept-Encoding")
	if gz != nil && acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		b = gz
	}
	if ct := contentType(name); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".json":
		return "application/json"
	}
	return ""
}
