// Package apierror owns the Anthropic error JSON that ccproxy writes when it
// answers a request itself (bad access key, unknown path, failures of its own
// dependencies), so that Claude Code and Anthropic's SDKs read gateway errors
// exactly like errors from the Anthropic API.
//
// The shape is Anthropic's documented error object:
//
//	{"type":"error","error":{"type":"authentication_error","message":"…"}}
//
// See https://docs.anthropic.com/en/api/errors for the types and their status
// codes.
package apierror

import (
	"bytes"
	"encoding/json"
)

// Anthropic error types, with the HTTP status Anthropic pairs them with.
const (
	InvalidRequest  = "invalid_request_error" // 400
	Authentication  = "authentication_error"  // 401
	Billing         = "billing_error"         // 402
	Permission      = "permission_error"      // 403
	NotFound        = "not_found_error"       // 404
	RequestTooLarge = "request_too_large"     // 413
	RateLimit       = "rate_limit_error"      // 429
	API             = "api_error"             // 500
	Timeout         = "timeout_error"         // 504
	Overloaded      = "overloaded_error"      // 529
)

type detail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

type envelope struct {
	Type  string `json:"type"`
	Error detail `json:"error"`
}

// Body returns the JSON error object for errType and message. message must
// never contain secrets (access keys, credentials): clients log these bodies.
func Body(errType, message string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Messages are shown to people in a terminal, not embedded in HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(envelope{Type: "error", Error: detail{Type: errType, Message: message}}); err != nil {
		// Encoding two strings cannot fail: encoding/json replaces invalid
		// UTF-8 rather than rejecting it.
		panic("apierror: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
