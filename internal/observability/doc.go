// Package observability owns what every ccproxy component shares for being
// watched in production: structured logging with log/slog, the redaction of
// secrets before anything is logged, and the HTTP endpoint that serves
// Prometheus metrics and the liveness and readiness probes.
//
// Redaction is centralised here so that every component hides the same
// things the same way: access keys (in paths and headers), credentials
// (Authorization, x-api-key, cookies, AWS tokens), passwords in URLs and
// request or response bodies, which are never logged at all.
package observability
