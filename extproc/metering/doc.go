// Package metering reads token usage out of Anthropic responses as they
// stream through extproc: an incremental SSE scanner that follows
// message_start and the cumulative message_delta usage across arbitrary
// chunk boundaries, and extraction from non-streamed JSON answers and
// count_tokens replies. It never changes a byte of what it reads; the router
// turns what it finds into a usage.Event.
package metering
