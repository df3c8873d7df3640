// Package soak holds the chaos soak: mixed Claude Code traffic (Plan,
// Bedrock, Plan-first fallback, streaming, aborted streams, count_tokens,
// bad keys, revocations) through ccproxy extproc, admin and controlplane
// run as separate processes on Postgres and Redis servers of their own,
// while a chaos loop kills and restarts each of them at random. At the end
// it checks that every answered request has exactly one usage row with the
// fakes' tokens and the right cost, that no request hung, that no revoked
// key was served after its revocation was acknowledged, that goroutines and
// memory came back to their baseline and that no log mentions a panic, and
// prints a summary.
//
// TestSoak runs for SOAK_DURATION (`make soak`: 10 minutes), 60 s when it
// is unset, as in `go test ./...` (skipped with -short). SOAK_SEED replays a run's schedule of
// requests and faults (the seed is printed at the start); SOAK_REPORT names
// a file the summary is also written to. The package sits under test/e2e to
// share its fake Anthropic and Bedrock servers.
package soak
