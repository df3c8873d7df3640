package bedrockpolicy

import "testing"

// TestDefaultTables: the built-in tables are consistent — every flag listed
// once, every rename names its Bedrock flag, model and stream never kept
// (the translation always removes them), and the members Claude Code's own
// Bedrock mode sends are all kept.
func TestDefaultTables(t *testing.T) {
	betas := DefaultBetaTable()
	if betas.Version == "" {
		t.Error("beta table without a version")
	}
	seen := map[string]bool{}
	for _, r := range betas.Rules {
		if seen[r.Anthropic] {
			t.Errorf("flag %q listed twice", r.Anthropic)
		}
		seen[r.Anthropic] = true
		if (r.Action == BetaRename) != (r.Bedrock != "") {
			t.Errorf("flag %q: action %d with Bedrock name %q", r.Anthropic, r.Action, r.Bedrock)
		}
	}
	fields := DefaultFieldTable()
	if fields.Version == "" {
		t.Error("field table without a version")
	}
	kept := map[string]bool{}
	for _, f := range fields.TopLevel {
		if kept[f] {
			t.Errorf("member %q listed twice", f)
		}
		kept[f] = true
	}
	for _, f := range []string{"model", "stream", "anthropic_version", "anthropic_beta"} {
		if kept[f] {
			t.Errorf("member %q is the translation's to set, not the table's to keep", f)
		}
	}
	for _, f := range []string{"messages", "system", "tools", "max_tokens", "thinking", "metadata"} {
		if !kept[f] {
			t.Errorf("member %q, which Claude Code sends, is not kept", f)
		}
	}
}
