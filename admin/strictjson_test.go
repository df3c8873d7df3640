package admin_test

import (
	"context"
	"slices"
	"testing"

	"github.com/ccproxy/ccproxy/internal/store"
)

// TestStrictJSON sends bodies encoding/json alone would accept with a
// meaning the client may not have intended: names in another case,
// repeated names, NUL, invalid UTF-8. Each is a 400 naming the member, and
// nothing is created.
func TestStrictJSON(t *testing.T) {
	e := newEnv(t)
	userID := e.createUser("strict")
	tests := []struct {
		name, method, path string
		body               rawBody
		status             int
		title              string
		fields             []string
	}{
		{"case-mismatched name beside the right one", "POST", "/api/v1/users", `{"name":"x","Name":"y"}`, 400, "unknown field", []string{"Name"}},
		{"case-mismatched name alone", "POST", "/api/v1/users", `{"NAME":"y"}`, 400, "unknown field", []string{"NAME"}},
		{"repeated name", "POST", "/api/v1/users", `{"name":"x","name":"y"}`, 400, "duplicate field", []string{"name"}},
		{"repeated PATCH member", "PATCH", "/api/v1/users/" + userID, `{"status":"active","status":"disabled"}`, 400, "duplicate field", []string{"status"}},
		{"repeated null PATCH member", "PATCH", "/api/v1/users/" + userID, `{"email":null,"email":"a@b.c"}`, 400, "duplicate field", []string{"email"}},
		{"repeated map key", "POST", "/api/v1/models", `{"anthropic_model_id":"claude-x","family":"claude-x","bedrock_model_id":"anthropic.claude-x","regions":{"us-east-1":"a","us-east-1":"b"}}`,
			400, "duplicate field", []string{"regions.us-east-1"}},
		{"NUL in a value", "POST", "/api/v1/users", `{"name":"a\u0000b"}`, 400, "malformed JSON", []string{"name"}},
		{"NUL in a nested value", "POST", "/api/v1/models", `{"anthropic_model_id":"claude-x","aliases":["a\u0000"]}`, 400, "malformed JSON", []string{"aliases"}},
		{"NUL in a name", "POST", "/api/v1/users", `{"name":"a","\u0000":1}`, 400, "unknown field", []string{`\x00`}},
		{"invalid UTF-8", "POST", "/api/v1/users", "{\"name\":\"\xff\"}", 400, "malformed JSON", nil},
		{"login password twice", "POST", "/api/v1/auth/login", `{"username":"root","password":"wrong password!","Password":"correct horse battery staple"}`,
			400, "unknown field", []string{"Password"}},
		// Map keys are data: keys differing in case are two keys (and this
		// one is then refused by validation, not by decoding).
		{"map keys in two cases", "POST", "/api/v1/models", `{"anthropic_model_id":"claude-y","family":"claude-y","bedrock_model_id":"anthropic.claude-y","regions":{"us-east-1":"a","US-EAST-1":"b"}}`,
			422, "validation failed", []string{"regions"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(tc.method, tc.path, tc.body)
			want(t, resp, tc.status)
			p := resp.problem(t)
			if p.Title != tc.title || !slices.Equal(p.fields(), tc.fields) {
				t.Fatalf("problem %+v, want %q %q", p, tc.title, tc.fields)
			}
		})
	}
	users, _, err := e.st.Users().List(context.Background(), store.UserListOptions{})
	if err != nil || len(users) != 1 || users[0].Name != "strict" || users[0].Status != store.UserActive {
		t.Fatalf("users after refused bodies: %+v, %v", users, err)
	}
}
