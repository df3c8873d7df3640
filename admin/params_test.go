package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestQueryAndPathParams sends parameters Postgres cannot store (NUL,
// invalid UTF-8) and malformed query strings to every kind of endpoint:
// each is a 400 problem naming the parameter, never a 500.
func TestQueryAndPathParams(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path string
		fields             []string
	}{
		{"NUL in an audit filter", "GET", "/api/v1/audit?action=%00", []string{"action"}},
		{"invalid UTF-8 in an audit filter", "GET", "/api/v1/audit?target_id=%C3%28", []string{"target_id"}},
		{"NUL in a cursor", "GET", "/api/v1/users?cursor=a%00b", []string{"cursor"}},
		{"NUL in a limit", "GET", "/api/v1/users?limit=1%00", []string{"limit"}},
		{"invalid UTF-8 in a usage filter", "GET", "/api/v1/usage/requests?session_id=%FF", []string{"session_id"}},
		{"NUL in a price filter", "GET", "/api/v1/prices?family=%00", []string{"family"}},
		{"NUL in a parameter name", "GET", "/api/v1/users?a%00b=1", []string{`"a\x00b"`}},
		{"invalid UTF-8 in a parameter name", "GET", "/api/v1/users?%FF=1", []string{`"\xff"`}},
		{"bad escape in a value", "GET", "/api/v1/models?name=%zz", []string{"name"}},
		{"bad escape in a name", "GET", "/api/v1/models?%zz=1", []string{"%zz"}},
		{"semicolon separator", "GET", "/api/v1/users?limit=1;status=active", []string{"limit"}},
		{"several at once, each named once", "GET", "/api/v1/audit?action=%00&target_type=%FF&action=%00", []string{"action", "target_type"}},
		{"NUL in a path id", "GET", "/api/v1/users/%00", []string{"id"}},
		{"invalid UTF-8 in a path id", "DELETE", "/api/v1/keys/%FF", []string{"id"}},
		{"open endpoint too", "GET", "/api/v1/openapi.json?x=%00", []string{"x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(tc.method, tc.path, nil)
			want(t, resp, http.StatusBadRequest)
			p := resp.problem(t)
			if p.Title != "invalid parameter" || !slices.Equal(p.fields(), tc.fields) {
				t.Fatalf("problem %+v, want fields %q", p, tc.fields)
			}
		})
	}
	t.Run("unauthenticated requests are refused first", func(t *testing.T) {
		want(t, e.do("GET", "/api/v1/audit?action=%00", nil, noAuth), http.StatusUnauthorized)
	})
	t.Run("well-formed parameters pass", func(t *testing.T) {
		want(t, e.do("GET", "/api/v1/audit?action=admin.login&target_type=%C3%A9t%C3%A9+x", nil), http.StatusOK)
	})
}

// FuzzQueryParams sends arbitrary query strings to the list endpoints: no
// answer is a 5xx, every error is a problem document that matches the
// OpenAPI document, and a query that url.ParseQuery refuses, or whose
// decoded names or values Postgres cannot store, is a 400.
func FuzzQueryParams(f *testing.F) {
	for _, s := range []string{
		"", "limit=10", "limit=%00", "status=%ff", "status=active&limit=2", "user_id=%C3%28", "action=%00", "cursor=a%00b",
		"%zz=1", "a;b=1", "from=2024-01-01T00:00:00Z&to=%00", "group_by=day&user_id=", "provider=bedrock&family=%E2%82%AC",
		"limit=99999999999999999999", "cursor=" + strings.Repeat("A", 300), "=&&=", "a=%", "target_id=x%2500",
	} {
		f.Add(s)
	}
	e := newEnv(f)
	h := e.srv.Config.Handler
	paths := []string{"/api/v1/users", "/api/v1/usage", "/api/v1/usage/requests", "/api/v1/audit", "/api/v1/models", "/api/v1/prices",
		"/api/v1/cache/economics", "/api/v1/cache/breaks"}
	f.Fuzz(func(t *testing.T, q string) {
		vals, perr := url.ParseQuery(q)
		storable := perr == nil
		for k, vs := range vals {
			for _, v := range append(vs, k) {
				if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
					storable = false
				}
			}
		}
		for _, p := range paths {
			req := httptest.NewRequest("GET", p, nil)
			req.URL.RawQuery = q
			req.Header.Set("Authorization", "Bearer "+e.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Result().Body)
			resp := response{status: rec.Code, header: rec.Header(), body: body}
			if resp.status >= 500 {
				t.Fatalf("GET %s?%q: %d %s", p, q, resp.status, body)
			}
			if resp.status >= 400 {
				resp.problem(t)
			}
			if !storable && resp.status != http.StatusBadRequest {
				t.Fatalf("GET %s?%q: %d, want 400 (%s)", p, q, resp.status, body)
			}
			if storable && resp.status == http.StatusBadRequest {
				t.Fatalf("GET %s?%q: 400 for a well-formed query (%s)", p, q, body)
			}
			e.validateIn(t, req, resp)
		}
	})
}
