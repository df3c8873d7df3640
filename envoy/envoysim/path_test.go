package envoysim

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ccproxyPaths is the control plane's HCM path configuration.
var ccproxyPaths = pathNormalization{normalize: true, mergeSlashes: true, escapedSlashes: hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD}

// TestPathNormalization: Envoy's maybeNormalizePath with the control plane's settings.
func TestPathNormalization(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"/v1/messages", "/v1/messages", true},
		{"/v1/messages?beta=true", "/v1/messages?beta=true", true},
		// Percent-encoded unreserved characters are decoded.
		{"/v1/%6dessages", "/v1/messages", true},
		{"/v1/%6Dessages?x=%6d", "/v1/messages?x=%6d", true},
		{"/%41k/K/v1/messages", "/Ak/K/v1/messages", true},
		// Other escapes stay as written, ? included: not the query.
		{"/v1/messages%3Fx", "/v1/messages%3Fx", true},
		{"/v1/messages%3fx", "/v1/messages%3fx", true},
		{"/v1/a%20b", "/v1/a%20b", true},
		// Escaped slashes are decoded first, then everything else applies.
		{"/v1%2Fmessages", "/v1/messages", true},
		{"/v1/x%2f..%2fmessages", "/v1/messages", true},
		{"/v1%5Cmessages", "/v1/messages", true},
		// Dot segments, also encoded.
		{"/v1/./messages", "/v1/messages", true},
		{"/v1/x/../messages", "/v1/messages", true},
		{"/v1/x/%2e%2E/messages", "/v1/messages", true},
		{"/v1/x/.%2e/messages", "/v1/messages", true},
		{"/../v1/messages", "/v1/messages", true},
		{"/v1/messages/.", "/v1/messages/", true},
		{"/v1/messages/..", "/v1/", true},
		{"/v1/...", "/v1/...", true},
		{"/v1/a.b", "/v1/a.b", true},
		// Slashes merged; a trailing one kept.
		{"//v1/messages", "/v1/messages", true},
		{"/v1//messages", "/v1/messages", true},
		{"/v1///messages//?q=//", "/v1/messages/?q=//", true},
		{"/v1/messages/", "/v1/messages/", true},
		{"//", "//", true}, // Envoy joins no segment between the leading and trailing slash
		// Backslashes are slashes.
		{`/v1\messages`, "/v1/messages", true},
		// Characters a path cannot hold are escaped, invalid escapes kept.
		{"/v1/a\"b", "/v1/a%22b", true},
		{"/v1/é", "/v1/%C3%A9", true},
		{"/v1/%zz", "/v1/%zz", true},
		// Rejected: fragments, NUL, invalid UTF-8.
		{"/v1/messages#x", "", false},
		{"/v1/a\x00b", "", false},
		{"/v1/a\xffb", "", false},
	}
	for _, tc := range tests {
		got, ok := ccproxyPaths.apply(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("apply(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	reject := pathNormalization{escapedSlashes: hcmv3.HttpConnectionManager_REJECT_REQUEST}
	if _, ok := reject.apply("/v1%2fmessages"); ok {
		t.Error("REJECT_REQUEST accepted an escaped slash")
	}
	if got, ok := reject.apply("/v1/%6dessages"); !ok || got != "/v1/%6dessages" {
		t.Errorf("REJECT_REQUEST without normalize_path: %q, %v", got, ok)
	}
	if (pathNormalization{}).enabled() {
		t.Error("the default configuration normalises")
	}
}

// TestHCMPathNormalization: through the data plane, the upstream receives the normalised
// path; a path Envoy cannot normalise is a 400 local reply that reaches no upstream.
func TestHCMPathNormalization(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, nil)
	c := cfg{noExtProc: true, backendAddr: up.addr(), hcm: func(h *hcmv3.HttpConnectionManager) {
		h.NormalizePath = wrapperspb.Bool(true)
		h.MergeSlashes = true
		h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	}}
	url := startSim(t, c.resources(t), nil)
	for in, want := range map[string]string{
		"/v1/%6dessages":    "/v1/messages",
		"//v1/messages":     "/v1/messages",
		"/v1%2Fmessages":    "/v1/messages",
		"/v1/x/../messages": "/v1/messages",
		"/v1/messages%3Fx":  "/v1/messages%3Fx",
		"/v1/messages/":     "/v1/messages/",
	} {
		before := len(up.seen())
		got := do(t, "GET", url+in, "", nil)
		if got.err != nil || got.status != 200 {
			t.Fatalf("%s: %d %v", in, got.status, got.err)
		}
		seen := up.seen()
		if len(seen) != before+1 || seen[len(seen)-1].path != want {
			t.Errorf("%s reached the upstream as %+v, want %s", in, seen[before:], want)
		}
	}
	for _, target := range []string{"/v1/messages#x", "/v1/a\xffb"} {
		before := len(up.seen())
		status, body := rawRequest(t, url, "GET "+target+" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if status != 400 || body != "" {
			t.Errorf("%q: %d %q; want an empty 400", target, status, body)
		}
		if len(up.seen()) != before {
			t.Errorf("%q reached the upstream", target)
		}
	}
}

// rawRequest writes req as is to the server at url and reads the response.
func rawRequest(t *testing.T, url, req string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// FuzzPathNormalization: for any request target the normalisation either rejects it or
// yields a path that starts with '/', holds no empty or dot segment before the query (a
// trailing slash aside) and normalises to itself.
func FuzzPathNormalization(f *testing.F) {
	for _, s := range []string{"//", "/v1/messages", "/v1/%6dessages?x", "//v1/./x/../messages", "/v1%2F..%5Cmessages/", `/a\b`, "/%2e%2E/x", "/é?q=//", "/%zz%", "/../..", "/v1/messages%3Fx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if !strings.HasPrefix(in, "/") {
			return // Envoy answers 404 before normalising
		}
		out, ok := ccproxyPaths.apply(in)
		if !ok {
			return
		}
		p, _ := splitQuery(out)
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("%q → %q: no leading slash", in, out)
		}
		// A path of slashes only stays "//": Envoy's mergeSlashes joins no segments between
		// its leading and trailing slash.
		trimmed := strings.TrimSuffix(p, "/")
		if strings.Trim(p, "/") != "" {
			for _, seg := range strings.Split(trimmed[1:], "/") {
				if seg == "" || dotKind(seg) != 0 {
					t.Fatalf("%q → %q: segment %q", in, out, seg)
				}
			}
		}
		again, ok := ccproxyPaths.apply(out)
		if !ok || again != out {
			t.Fatalf("%q → %q → %q, %v: not idempotent", in, out, again, ok)
		}
	})
}
