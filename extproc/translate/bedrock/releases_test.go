package bedrock

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
)

const releasesDir = "../../../testdata/claude-code-releases"

func TestTranslateCacheControl(t *testing.T) {
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())
	tests := []struct {
		name, in, want string
		dropped        []string
	}{
		{
			name:    "scope of a system block",
			in:      `{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral","scope":"global"}},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}],"max_tokens":1}`,
			want:    `{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}],"max_tokens":1,"anthropic_version":"bedrock-2023-05-31"}`,
			dropped: []string{"system[].cache_control"},
		},
		{
			name:    "ttl kept, unknown member of a tool dropped",
			in:      `{"tools":[{"name":"t","cache_control":{"scope":"global", "type":"ephemeral","ttl":"1h"}}]}`,
			want:    `{"tools":[{"name":"t","cache_control":{"type":"ephemeral","ttl":"1h"}}],"anthropic_version":"bedrock-2023-05-31"}`,
			dropped: []string{"tools[].cache_control"},
		},
		{
			name: "message content and a tool_result's own content",
			in: `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"r","cache_control":{"type":"ephemeral","scope":"global"}}]},` +
				`{"type":"text","text":"q","cache_control":{"type":"ephemeral","scope":"global"}}]},{"role":"assistant","content":"ok"}]}`,
			want: `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[{"type":"text","text":"r","cache_control":{"type":"ephemeral"}}]},` +
				`{"type":"text","text":"q","cache_control":{"type":"ephemeral"}}]},{"role":"assistant","content":"ok"}],"anthropic_version":"bedrock-2023-05-31"}`,
			dropped: []string{"messages[].content[].cache_control"},
		},
		{
			name:    "message member and content fixed together",
			in:      `{"messages":[{"role":"user","output_config":{},"content":[{"type":"text","text":"q","cache_control":{"scope":"global","type":"ephemeral"}}]}]}`,
			want:    `{"messages":[{"role":"user","content":[{"type":"text","text":"q","cache_control":{"type":"ephemeral"}}]}],"anthropic_version":"bedrock-2023-05-31"}`,
			dropped: []string{"messages[].content[].cache_control", "messages[].output_config"},
		},
		{
			name:    "an escaped key is cut along with a plain one",
			in:      `{"system":[{"cache_control":{"type":"ephemeral","scope":"g"}},{"c\u0061che_control":{"scope":"x","type":"ephemeral"}}]}`,
			want:    `{"system":[{"cache_control":{"type":"ephemeral"}},{"c\u0061che_control":{"type":"ephemeral"}}],"anthropic_version":"bedrock-2023-05-31"}`,
			dropped: []string{"system[].cache_control"},
		},
		{
			name: "allowed spellings untouched, byte for byte",
			in:   `{"system":[{"type":"text","text":"\"cache_control\":{\"scope\":1}","cache_control":{"type":"ephemeral","ttl":"5m"}}], "tools":[{"cache_control": {"type":"ephemeral"}}]}`,
			want: `{"system":[{"type":"text","text":"\"cache_control\":{\"scope\":1}","cache_control":{"type":"ephemeral","ttl":"5m"}}],"tools":[{"cache_control": {"type":"ephemeral"}}],"anthropic_version":"bedrock-2023-05-31"}`,
		},
		{
			name: "cache_control inside a tool's input is the tool's business",
			in:   `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"cache_control":{"scope":"x"}}}]}]}`,
			want: `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"cache_control":{"scope":"x"}}}]}],"anthropic_version":"bedrock-2023-05-31"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.TranslateRequest([]byte(tt.in), "", false, "m")
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Body) != tt.want {
				t.Errorf("body\n got %s\nwant %s", got.Body, tt.want)
			}
			if !slices.Equal(got.DroppedFields, tt.dropped) {
				t.Errorf("dropped %q, want %q", got.DroppedFields, tt.dropped)
			}
		})
	}
}

// TestTranslateReleases translates the main turn of every captured Claude
// Code release and holds the result to what the releases themselves send
// in their own Bedrock mode: every member path of the translation must
// occur in some release's Bedrock-mode body (ignoring the safeguards member
// only 2.1.287 sent, which the newest releases no longer send), and every
// anthropic_beta entry must be one the table keeps.
func TestTranslateReleases(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(releasesDir, "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no release captures in %s: %v", releasesDir, err)
	}
	seen := map[string]bool{}
	for _, dir := range dirs {
		var body map[string]any
		readJSON(t, filepath.Join(dir, "bedrock-mode-main.body.json"), &body)
		delete(body, "safeguards")
		delete(body, "anthropic_beta")
		for _, p := range memberPaths(body, "") {
			seen[p] = true
		}
	}
	kept := bedrockBetaNames()
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, "anthropic-main.body.json"))
			if err != nil {
				t.Fatal(err)
			}
			var req struct{ Headers map[string]string }
			readJSON(t, filepath.Join(dir, "anthropic-main.request.json"), &req)
			got, err := tr.TranslateRequest(raw, req.Headers["anthropic-beta"], true, "m")
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			if err := json.Unmarshal(got.Body, &out); err != nil {
				t.Fatal(err)
			}
			for _, b := range got.Betas {
				if !kept[b] {
					t.Errorf("anthropic_beta %q is not kept by the table", b)
				}
			}
			delete(out, "anthropic_beta")
			var unknown []string
			for _, p := range memberPaths(out, "") {
				if !seen[p] {
					unknown = append(unknown, p)
				}
			}
			if len(unknown) > 0 {
				t.Errorf("translated body has members no release sends to Bedrock: %q (dropped %q)", unknown, got.DroppedFields)
			}
		})
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// memberPaths lists the member paths of v ("messages[].content[].type"),
// not descending into tool schemas or tool inputs, whose members are the
// tools' own.
func memberPaths(v any, prefix string) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := prefix + "." + k
			out = append(out, p)
			if k == "input_schema" || k == "input" {
				continue
			}
			out = append(out, memberPaths(e, p)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, memberPaths(e, prefix+"[]")...)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func bedrockBetaNames() map[string]bool {
	out := map[string]bool{}
	for _, r := range bedrockpolicy.DefaultBetaTable().Rules {
		switch r.Action {
		case bedrockpolicy.BetaKeep:
			out[r.Anthropic] = true
		case bedrockpolicy.BetaRename:
			out[r.Bedrock] = true
		}
	}
	return out
}
