package admin

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// paramErrors checks every query parameter (names and values) and every
// path wildcard of r, before any handler reads them: each must decode (the
// percent-escapes are well formed, no ';' separators) to valid UTF-8
// without NUL. Postgres rejects NUL and invalid UTF-8 in text (SQLSTATE
// 22021), so without this check such a value reached a query and came back
// as a 500; handlers then validate what the values mean.
func paramErrors(r *http.Request) []fieldError {
	var errs []fieldError
	seen := map[string]bool{}
	add := func(field, msg string) {
		if !seen[field] {
			seen[field] = true
			errs = append(errs, fieldError{Field: field, Message: msg})
		}
	}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			add(fieldName(rawKey), "is not a well-formed URL-encoded name")
			continue
		}
		if !validText(key) {
			add(fieldName(key), "parameter names must be valid UTF-8 without NUL characters")
			continue
		}
		if strings.Contains(rawValue, ";") || strings.Contains(rawKey, ";") {
			// url.ParseQuery refuses ';' as a separator, and so does the
			// API: a value meant to hold one must escape it (%3B).
			add(key, "must not contain an unescaped ';'")
			continue
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			add(key, "is not well-formed URL encoding")
			continue
		}
		if !validText(value) {
			add(key, "must be valid UTF-8 without NUL characters")
		}
	}
	for _, name := range patternWildcards(r.Pattern) {
		if !validText(r.PathValue(name)) {
			add(name, "must be valid UTF-8 without NUL characters")
		}
	}
	return errs
}

// validText reports whether s can be stored in a Postgres text column.
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// fieldName shows an untrusted parameter name in a problem: quoted like Go
// source when it is not plain printable text.
func fieldName(s string) string {
	if validText(s) && strconv.CanBackquote(s) {
		return s
	}
	return strconv.QuoteToASCII(s)
}

// patternWildcards lists the wildcard names of a ServeMux pattern such as
// "GET /api/v1/users/{id}".
func patternWildcards(pattern string) []string {
	var out []string
	for {
		i := strings.IndexByte(pattern, '{')
		if i < 0 {
			return out
		}
		pattern = pattern[i+1:]
		j := strings.IndexByte(pattern, '}')
		if j < 0 {
			return out
		}
		name := strings.TrimSuffix(pattern[:j], "...")
		if name != "$" {
			out = append(out, name)
		}
		pattern = pattern[j+1:]
	}
}
