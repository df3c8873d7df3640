// Package bedrockpolicy owns the allow-lists that decide what of an Anthropic
// request may reach Bedrock: the anthropic-beta flags (kept, renamed or
// dropped) and the body members. Bedrock rejects a whole request for one flag
// or member it does not know, and every Claude Code release adds some, so
// anything not listed is dropped. The control plane serves the tables to
// extproc as data (a new table needs no extproc release); extproc's
// translator applies them.
package bedrockpolicy

// BetaAction says what happens to an anthropic-beta flag on its way to Bedrock.
type BetaAction uint8

const (
	// BetaDrop removes the flag. Flags missing from the table are dropped too;
	// listing a flag as BetaDrop documents that the drop is deliberate.
	BetaDrop BetaAction = iota
	// BetaKeep passes the flag under its own name.
	BetaKeep
	// BetaRename passes the flag under BetaRule.Bedrock.
	BetaRename
)

// BetaRule is one row of the beta allow-list.
type BetaRule struct {
	Anthropic string     // flag as sent in the anthropic-beta header
	Action    BetaAction // keep, rename or drop
	Bedrock   string     // Bedrock's name for the flag when Action is BetaRename
}

// BetaTable is a versioned allow-list of anthropic-beta flags. Bedrock
// rejects a whole request for a single flag it does not know ("invalid beta
// flag") and every Claude Code release adds flags, so anything not listed as
// keep or rename is dropped. The control plane may ship a newer table at
// runtime; Version identifies which one a decision was taken with.
//
// The order of Rules is the order of the anthropic_beta array sent to
// Bedrock, which makes the output independent of the client's header order
// and de-duplicates flags renamed onto the same Bedrock name.
type BetaTable struct {
	Version string
	Rules   []BetaRule
}

// DefaultBetaTable returns the built-in table, derived from what Claude Code
// 2.1.332 itself sends to Bedrock for the same turn
// (testdata/claude-code-2.1.332/bedrock-mode-turn1.body.json) plus the flags
// Bedrock documents for Anthropic models.
func DefaultBetaTable() BetaTable {
	return BetaTable{
		Version: "2026-11-25",
		Rules: []BetaRule{
			{Anthropic: "interleaved-thinking-2025-05-14", Action: BetaKeep},
			// Bedrock ships tool search under its original beta name; Claude
			// Code performs the same rename in its own Bedrock mode.
			{Anthropic: "advanced-tool-use-2025-11-20", Action: BetaRename, Bedrock: "tool-search-tool-2025-10-19"},
			{Anthropic: "tool-search-tool-2025-10-19", Action: BetaKeep},
			{Anthropic: "thinking-token-count-2026-05-13", Action: BetaKeep},
			{Anthropic: "context-1m-2025-08-07", Action: BetaKeep},
			{Anthropic: "fine-grained-tool-streaming-2025-05-14", Action: BetaKeep},
			{Anthropic: "token-efficient-tools-2025-02-19", Action: BetaKeep},
			{Anthropic: "output-128k-2025-02-19", Action: BetaKeep},
			{Anthropic: "computer-use-2025-01-24", Action: BetaKeep},
			{Anthropic: "computer-use-2024-10-22", Action: BetaKeep},
			{Anthropic: "tool-examples-2025-10-29", Action: BetaKeep},
			// Dropped by Claude Code's own Bedrock mode.
			{Anthropic: "claude-code-20250219", Action: BetaDrop},
			{Anthropic: "context-management-2025-06-27", Action: BetaDrop},
			{Anthropic: "per-turn-control-2026-07-01", Action: BetaDrop},
			{Anthropic: "mid-conversation-tool-changes-2026-07-01", Action: BetaDrop},
			{Anthropic: "effort-2025-11-24", Action: BetaDrop},
		},
	}
}

// FieldTable is the allow-list of body members forwarded to Bedrock: Bedrock
// answers 400 ("extraneous key [x] is not permitted") for any other key.
// model and stream are always removed and anthropic_version and
// anthropic_beta always replaced, whatever the table says.
type FieldTable struct {
	Version string
	// TopLevel lists the top-level members kept.
	TopLevel []string
	// Message lists the members kept in each object of the messages array.
	// Claude Code adds per-message output_config with
	// per-turn-control-2026-07-01, a beta Bedrock does not have.
	Message []string
	// CacheControl lists the members kept in the cache_control objects of
	// system, tools and message content blocks. Claude Code 2.1.36 to
	// 2.1.287 send prompt-caching-scope-2026-01-05 and may mark system
	// blocks {"type":"ephemeral","scope":"global"}; Bedrock has no such
	// beta, and Claude Code's own Bedrock mode never sends the member.
	// Empty means DefaultFieldTable's list: the runtime protocol does not
	// carry this list.
	CacheControl []string
}

// DefaultFieldTable returns the built-in field allow-list.
func DefaultFieldTable() FieldTable {
	return FieldTable{
		Version: "2026-11-25",
		TopLevel: []string{
			"messages", "system", "tools", "tool_choice", "metadata", "max_tokens",
			"thinking", "output_config", "stop_sequences", "temperature", "top_p", "top_k",
		},
		Message:      []string{"role", "content"},
		CacheControl: []string{"type", "ttl"},
	}
}
