package dashboard

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func serve(t *testing.T, method, path string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec
}

// TestShell: every path outside /assets/ is the application shell (or,
// without a build, the placeholder), never cached, with the CSP.
func TestShell(t *testing.T) {
	want := "The dashboard was not built"
	if Built() {
		want = `<div id="root"></div>`
	}
	for _, path := range []string{"/", "/developers/0b6f1f0e-8a4e-4d55-9c1a-3f2d8e6b7a10", "/audit?action=key.revoke", "/login"} {
		t.Run(path, func(t *testing.T) {
			rec := serve(t, "GET", path, nil)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
				t.Fatalf("%d %q", rec.Code, rec.Body.String())
			}
			h := rec.Header()
			if h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get("Cache-Control") != "no-cache" ||
				h.Get("Content-Security-Policy") != csp || h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("headers %v", h)
			}
		})
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if rec := serve(t, m, "/", nil); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d", m, rec.Code)
		}
	}
	for path, code := range map[string]int{"/assets/missing.js": 404, "/assets/x.js.gz": 404, "/assets/../../embed.go": 200} {
		// The last one is cleaned to /embed.go: the shell, not a file.
		if rec := serve(t, "GET", path, nil); rec.Code != code || code == 200 && !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d, want %d", path, rec.Code, code)
		}
	}
}

// TestAssets: built assets are immutable and sent gzip-compressed to
// browsers that accept it, identical once decompressed.
func TestAssets(t *testing.T) {
	if !Built() {
		t.Skip("the dashboard is not built (make dashboard)")
	}
	root, _ := fs.Sub(dist, "dist")
	names, err := fs.Glob(root, "assets/*.js")
	if err != nil || len(names) == 0 {
		t.Fatalf("no built scripts: %v", err)
	}
	raw, _ := fs.ReadFile(root, names[0])
	plain := serve(t, "GET", "/"+names[0], nil)
	if plain.Code != 200 || !bytes.Equal(plain.Body.Bytes(), raw) || plain.Header().Get("Content-Encoding") != "" ||
		plain.Header().Get("Cache-Control") != "public, max-age=31536000, immutable" || plain.Header().Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("plain: %d %v", plain.Code, plain.Header())
	}
	for _, ae := range []string{"gzip", "br, gzip;q=0.8", "deflate, GZIP"} {
		rec := serve(t, "GET", "/"+names[0], http.Header{"Accept-Encoding": {ae}})
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("%q: not compressed: %v", ae, rec.Header())
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(zr)
		if !bytes.Equal(got, raw) {
			t.Fatalf("%q: decompressed asset differs", ae)
		}
	}
	if rec := serve(t, "GET", "/"+names[0], http.Header{"Accept-Encoding": {"gzip;q=0"}}); rec.Header().Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got gzip")
	}
}
