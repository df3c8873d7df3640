// Package e2e holds the acceptance tests that run real Claude Code through a
// running `ccproxy dev` (migrations, control plane, ext_proc and envoysim in
// one process) against a recording fake Anthropic, and check what each side
// saw: the answer Claude Code printed, the exact bytes and headers the fake
// received, local answers that never reach the upstream, and the usage rows
// the gateway wrote to Postgres.
//
// The tests build ./cmd/ccproxy once and install the pinned Claude Code
// release from npm into a cache (see internal/claudecode), so they need Go,
// Node.js with npm, and the Postgres server that internal/testenv uses.
package e2e
