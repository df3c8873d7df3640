package bedrock

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/ccproxy/ccproxy/extproc/apierror"
)

// StatusOverloaded is Anthropic's non-standard "overloaded" status, which
// Claude Code retries.
const StatusOverloaded = 529

// MappedError is a Bedrock HTTP error translated for an Anthropic client.
type MappedError struct {
	// Status and Body are the Anthropic response.
	Status int
	Body   []byte
	// BedrockType is the exception type Bedrock reported, "" if none.
	BedrockType string
	// BedrockMessage is Bedrock's own message, for the gateway's logs; it is
	// not always in Body (see CredentialRejected).
	BedrockMessage string
	// CredentialRejected is set when Bedrock rejected the gateway's own
	// credential: the admin's problem, to be logged and counted.
	CredentialRejected bool
}

// credentialMessage is what a developer sees when the gateway's Bedrock
// credential is refused. It is deliberately a 500 and not a 401: Claude Code
// presents a 401 as the developer's own login failing.
const credentialMessage = "ccproxy: AWS Bedrock rejected the gateway's Bedrock credential; ask the gateway administrator to check it"

// MapError maps a Bedrock HTTP error response to an Anthropic one. The
// exception type comes from the x-amzn-ErrorType header (anything from the
// first ':' on is a URL of documentation, stripped) or the body's __type,
// the message from the body's message or Message.
func MapError(status int, errorTypeHeader string, body []byte) MappedError {
	var payload struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	// A body that is not JSON still maps by header and status.
	_ = json.Unmarshal(body, &payload)
	typ := errorTypeHeader
	if typ == "" {
		typ = payload.Type
	}
	if i := strings.IndexByte(typ, ':'); i >= 0 {
		typ = typ[:i]
	}
	// __type may be namespaced ("com.amazon.bedrock#ThrottlingException").
	if i := strings.LastIndexByte(typ, '#'); i >= 0 {
		typ = typ[i+1:]
	}
	typ = strings.TrimSpace(typ)
	msg := payload.Message
	if msg == "" {
		msg = payload.MessageU
	}
	m := MappedError{BedrockType: typ, BedrockMessage: msg}

	var errType string
	switch typ {
	case "ThrottlingException", "ServiceQuotaExceededException", "ModelNotReadyException":
		m.Status, errType = http.StatusTooManyRequests, apierror.RateLimit
	case "ValidationException":
		m.Status, errType = http.StatusBadRequest, apierror.InvalidRequest
	case "ServiceUnavailableException":
		m.Status, errType = StatusOverloaded, apierror.Overloaded
	case "ModelTimeoutException":
		m.Status, errType = http.StatusGatewayTimeout, apierror.Timeout
	case "ResourceNotFoundException":
		m.Status, errType = http.StatusNotFound, apierror.NotFound
	case "AccessDeniedException", "UnrecognizedClientException":
		m.CredentialRejected = true
		m.Status = http.StatusInternalServerError
		m.Body = apierror.Body(apierror.API, credentialMessage)
		return m
	case "":
		// No type at all (e.g. a proxy in front of Bedrock): keep the
		// retryable classes retryable.
		switch status {
		case http.StatusTooManyRequests:
			m.Status, errType = http.StatusTooManyRequests, apierror.RateLimit
		case http.StatusServiceUnavailable:
			m.Status, errType = StatusOverloaded, apierror.Overloaded
		default:
			m.Status, errType = http.StatusInternalServerError, apierror.API
		}
	default:
		m.Status, errType = http.StatusInternalServerError, apierror.API
	}
	if msg == "" {
		msg = "AWS Bedrock returned HTTP " + strconv.Itoa(status)
		if typ != "" {
			msg = "AWS Bedrock returned " + typ
		}
	}
	m.Body = apierror.Body(errType, msg)
	return m
}
