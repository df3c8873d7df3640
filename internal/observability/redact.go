package observability

import (
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// Redacted replaces a secret value in logs.
const Redacted = "[REDACTED]"

// secretHeaders are request or response headers that carry credentials.
// Lower-case, as HTTP/2 and Envoy present them.
var secretHeaders = map[string]bool{
	"authorization":        true,
	"proxy-authorization":  true,
	"x-api-key":            true,
	"x-ccproxy-key":        true,
	"cookie":               true,
	"set-cookie":           true,
	"x-amz-security-token": true,
	"x-csrf-token":         true,
}

// secretWords mark attribute names as secret wherever they appear.
var secretWords = []string{"password", "secret", "token", "authorization", "api_key", "apikey", "access_key", "credential", "cookie"}

// IsSecretName reports whether a header or attribute name denotes a secret.
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	if secretHeaders[n] {
		return true
	}
	n = strings.ReplaceAll(n, "-", "_")
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// RedactHeaderValue returns value, or Redacted when the header carries a
// credential.
func RedactHeaderValue(name, value string) string {
	if IsSecretName(name) {
		return Redacted
	}
	return RedactPath(value)
}

// RedactHeaders returns a log value for h with credentials redacted and keys
// sorted, so that logs are stable and safe.
func RedactHeaders(h http.Header) slog.Value {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	attrs := make([]slog.Attr, 0, len(names))
	for _, k := range names {
		vals := h[k]
		red := make([]string, len(vals))
		for i, v := range vals {
			red[i] = RedactHeaderValue(k, v)
		}
		attrs = append(attrs, slog.String(strings.ToLower(k), strings.Join(red, ", ")))
	}
	return slog.GroupValue(attrs...)
}

// RedactKey returns a form of an access key that is safe to log: its
// scheme prefix and first four characters only.
func RedactKey(key string) string {
	const keep = len("ak_") + 4
	if len(key) <= keep {
		return Redacted
	}
	return key[:keep] + "…"
}

// RedactPath hides the access key in a gateway path of the form
// /ak/<key>/rest, keeping the rest of the path for debugging.
func RedactPath(p string) string {
	i := strings.Index(p, "/ak/")
	if i < 0 {
		return p
	}
	start := i + len("/ak/")
	end := strings.IndexAny(p[start:], "/?#")
	if end < 0 {
		return p[:start] + Redacted
	}
	return p[:start] + Redacted + p[start+end:]
}

// RedactURL removes the password from a connection URL (Postgres, Redis).
// An unparseable URL is hidden entirely, since it may still hold a secret.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return Redacted
	}
	return u.Redacted()
}
