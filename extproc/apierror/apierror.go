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
	Type      string `json:"type"`
	Error     detail `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

// Body returns the JSON error object for errType and message. message must
// never contain secrets (access keys, credentials): clients log these bodies.
func Body(errType, message string) []byte {
	return encode(envelope{Type: "error", Error: detail{Type: errType, Message: message}})
}

// BodyWithRequestID is Body with the request's id in "request_id", as
// Anthropic's own error bodies carry theirs, so that a developer's report
// names the request an operator can find in the logs.
func BodyWithRequestID(errType, message, requestID string) []byte {
	return encode(envelope{Type: "error", Error: detail{Type: errType, Message: message}, RequestID: requestID})
}

// TypeForStatus is the Anthropic error type Anthropic pairs with an HTTP
// status; statuses Anthropic does not use map by class (4xx
// invalid_request_error, 5xx api_error).
func TypeForStatus(status int) string {
	switch status {
	case 401:
		return Authentication
	case 402:
		return Billing
	case 403:
		return Permission
	case 404:
		return NotFound
	case 408, 504:
		return Timeout
	case 413:
		return RequestTooLarge
	case 429:
		return RateLimit
	case 529:
		return Overloaded
	}
	if status >= 400 && status < 500 {
		return InvalidRequest
	}
	return API
}

func encode(e envelope) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Messages are shown to people in a terminal, not embedded in HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		// Encoding two strings cannot fail: encoding/json replaces invalid
		// UTF-8 rather than rejecting it.
		panic("apierror: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
