package admin_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestRateLimitsAPI: a user's and a key's rate limits are set, read,
// replaced and removed; every change is audited and tells extproc (the
// key lookups of the subject's keys are invalidated); bad values are
// refused field by field.
func TestRateLimitsAPI(t *testing.T) {
	e := newEnv(t)
	userID := e.createUser("rl")
	resp := e.do("POST", "/api/v1/users/"+userID+"/keys", map[string]any{"name": "k"})
	want(t, resp, http.StatusCreated)
	var key struct {
		ID string `json:"id"`
	}
	resp.decode(t, &key)
	const none = `{"input_tokens_per_minute":null,"output_tokens_per_minute":null,"requests_per_minute":null}`

	for _, sub := range []struct{ name, path, id, target string }{
		{"user", "/api/v1/users/" + userID + "/rate-limits", userID, "user"},
		{"key", "/api/v1/keys/" + key.ID + "/rate-limits", key.ID, "access_key"},
	} {
		t.Run(sub.name, func(t *testing.T) {
			body := func(r response) string {
				t.Helper()
				var v any
				if err := json.Unmarshal(r.body, &v); err != nil {
					t.Fatalf("body %s: %v", r.body, err)
				}
				b, _ := json.Marshal(v)
				return string(b)
			}
			resp := e.do("GET", sub.path, nil)
			want(t, resp, http.StatusOK)
			if got := body(resp); got != none {
				t.Fatalf("GET before any = %s; want %s", got, none)
			}
			invs := len(e.inv.all())
			resp = e.do("PUT", sub.path, map[string]any{"requests_per_minute": 5, "input_tokens_per_minute": nil, "output_tokens_per_minute": 2000})
			want(t, resp, http.StatusOK)
			const set = `{"input_tokens_per_minute":null,"output_tokens_per_minute":2000,"requests_per_minute":5}`
			if got := body(resp); got != set {
				t.Fatalf("PUT = %s; want %s", got, set)
			}
			if got := body(e.do("GET", sub.path, nil)); got != set {
				t.Fatalf("GET = %s; want %s", got, set)
			}
			all := e.inv.all()
			if len(all) != invs+1 || len(all[invs].KeyIDs) != 1 || all[invs].KeyIDs[0].String() != key.ID {
				t.Fatalf("invalidations %+v; want one naming the key", all[invs:])
			}
			// Replace with fewer limits: the dropped one is gone.
			want(t, e.do("PUT", sub.path, map[string]any{"requests_per_minute": 60, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}), http.StatusOK)
			// All null removes them, as DELETE does (idempotent).
			resp = e.do("PUT", sub.path, map[string]any{"requests_per_minute": nil, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil})
			want(t, resp, http.StatusOK)
			if got := body(resp); got != none {
				t.Fatalf("PUT all null = %s; want %s", got, none)
			}
			want(t, e.do("PUT", sub.path, map[string]any{"requests_per_minute": 1, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}), http.StatusOK)
			want(t, e.do("DELETE", sub.path, nil), http.StatusNoContent)
			want(t, e.do("DELETE", sub.path, nil), http.StatusNoContent)
			if got := body(e.do("GET", sub.path, nil)); got != none {
				t.Fatalf("GET after DELETE = %s", got)
			}
			wantActions := []string{"rate_limits." + sub.name + ".put", "rate_limits." + sub.name + ".put", "rate_limits." + sub.name + ".delete",
				"rate_limits." + sub.name + ".put", "rate_limits." + sub.name + ".delete"}
			var acts []string
			for _, a := range e.auditActions(sub.id) {
				if len(a) > 12 && a[:12] == "rate_limits." {
					acts = append(acts, a)
				}
			}
			if !slices.Equal(acts, wantActions) {
				t.Errorf("audit %v; want %v", acts, wantActions)
			}

			for _, tc := range []struct {
				name  string
				body  map[string]any
				field string
			}{
				{"zero", map[string]any{"requests_per_minute": 0, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}, "requests_per_minute"},
				{"too many requests", map[string]any{"requests_per_minute": 1_000_001, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}, "requests_per_minute"},
				{"negative tokens", map[string]any{"requests_per_minute": nil, "input_tokens_per_minute": -5, "output_tokens_per_minute": nil}, "input_tokens_per_minute"},
				{"too many tokens", map[string]any{"requests_per_minute": nil, "input_tokens_per_minute": nil, "output_tokens_per_minute": 10_000_000_001}, "output_tokens_per_minute"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := e.do("PUT", sub.path, tc.body)
					want(t, resp, http.StatusUnprocessableEntity)
					p := resp.problem(t)
					if len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
						t.Errorf("errors %+v; want one for %s", p.Errors, tc.field)
					}
				})
			}
		})
	}

	for _, path := range []string{"/api/v1/users/" + randomID + "/rate-limits", "/api/v1/keys/" + randomID + "/rate-limits"} {
		want(t, e.do("GET", path, nil), http.StatusNotFound)
		want(t, e.do("PUT", path, map[string]any{"requests_per_minute": 1, "input_tokens_per_minute": nil, "output_tokens_per_minute": nil}), http.StatusNotFound)
		want(t, e.do("DELETE", path, nil), http.StatusNotFound)
	}
}
