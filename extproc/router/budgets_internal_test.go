package router

import (
	"testing"
)

func TestReplaceModel(t *testing.T) {
	for _, tc := range []struct {
		body, model, want string
		ok                bool
	}{
		{`{"model":"claude-opus-4-1","max_tokens":5}`, "claude-sonnet-4-5", `{"model":"claude-sonnet-4-5","max_tokens":5}`, true},
		// The last of duplicate keys is the one Anthropic reads.
		{`{"model":"a", "x":{"model":"inner"}, "model" : "b"}`, "c", `{"model":"a", "x":{"model":"inner"}, "model" : "c"}`, true},
		{`{"max_tokens":5}`, "c", ``, false},
		{`{"model":"a"`, "c", ``, false},
	} {
		got, ok := replaceModel([]byte(tc.body), tc.model)
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("replaceModel(%s, %s) = %s, %v; want %s, %v", tc.body, tc.model, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDowngradeTarget(t *testing.T) {
	m := map[string]string{"opus": "claude-sonnet-4-5", "claude-haiku-4-5-20251001": "claude-haiku-3"}
	for _, tc := range []struct {
		model, want string
		ok          bool
	}{
		{"claude-opus-4-1-20250805", "claude-sonnet-4-5", true},
		{"claude-opus-5-5[1m]", "claude-sonnet-4-5", true},
		{"claude-haiku-4-5-20251001", "claude-haiku-3", true},
		{"claude-sonnet-4-5", "", false},
		{"gpt-4", "", false},
		{"", "", false},
	} {
		p := &Processor{r: &Router{}}
		p.req.fields.model = tc.model
		got, ok := p.downgradeTarget(m)
		if got != tc.want || ok != tc.ok {
			t.Errorf("downgradeTarget(%q) = %q, %v; want %q, %v", tc.model, got, ok, tc.want, tc.ok)
		}
	}
}
