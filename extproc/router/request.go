package router

import (
	"bytes"
	"strings"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// maxModelLen bounds the model name kept from a request body: real names
// are short, and the value goes into every usage row.
const maxModelLen = 256

// maxHeaderValueLen bounds the attribution header values kept for usage.
const maxHeaderValueLen = 128

// requestFields are the body fields routing and metering need.
type requestFields struct {
	model  string
	stream bool
	// session is the Claude Code session named in metadata.user_id, for
	// releases that send no x-claude-code-session-id header.
	session string
}

// scanRequest reads the top-level "model" and "stream" of a Messages
// request body without decoding it. As with encoding/json, the last of
// duplicate keys wins; a model that is not a string reads as "" and a
// stream that is not a boolean as false. Malformed JSON yields what was
// found before the error: the request still goes to Anthropic, which
// answers it with its own 400.
func scanRequest(body []byte) requestFields {
	var model, stream, metadata []byte
	it := jsonscan.Object(body)
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		switch {
		case jsonscan.KeyIs(k, "model"):
			model = v
		case jsonscan.KeyIs(k, "stream"):
			stream = v
		case jsonscan.KeyIs(k, "metadata"):
			metadata = v
		}
	}
	var f requestFields
	f.session = metadataSession(metadata)
	if model != nil {
		f.model, _ = jsonscan.String(model)
		f.model = truncate(f.model, maxModelLen)
	}
	if stream != nil {
		f.stream, _ = jsonscan.Bool(stream)
	}
	return f
}

// sessionFromBody returns the session named in the metadata.user_id of a
// request body (Claude Code's Bedrock mode sends the same metadata).
func sessionFromBody(body []byte) string {
	metadata, _ := jsonscan.Find(body, "metadata")
	return metadataSession(metadata)
}

// metadataSession returns the Claude Code session id carried in the raw
// value of a request's "metadata" member, "" when there is none.
//
// Claude Code releases before the x-claude-code-session-id header (2.1.85
// and older) name the session only here; the format changed over the year:
//
//	"user_<device hash>_account_<account uuid>_session_<session uuid>"      (2.1.76 and older)
//	"{\"device_id\":\"…\",\"account_uuid\":\"…\",\"session_id\":\"<uuid>\"}" (by 2.1.81)
func metadataSession(metadata []byte) string {
	if len(metadata) == 0 || metadata[0] != '{' {
		return ""
	}
	raw, ok := jsonscan.Find(metadata, "user_id")
	if !ok {
		return ""
	}
	userID, ok := jsonscan.String(raw)
	if !ok {
		return ""
	}
	if strings.HasPrefix(userID, "{") {
		inner, ok := jsonscan.Find([]byte(userID), "session_id")
		if !ok {
			return ""
		}
		s, _ := jsonscan.String(inner)
		return headerString([]byte(s))
	}
	if _, s, ok := strings.Cut(userID, "_session_"); ok {
		return headerString([]byte(s))
	}
	return ""
}

// truncate cuts s to at most n bytes, dropping a UTF-8 sequence the cut
// would split.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// headerString converts a header value kept for usage, bounded.
func headerString(v []byte) string {
	if len(v) > maxHeaderValueLen {
		v = v[:maxHeaderValueLen]
	}
	return strings.ToValidUTF8(string(v), "")
}

// clientVersion extracts the client version from a User-Agent: the version
// of "claude-cli/<version> (…)", else the whole first product token.
func clientVersion(ua []byte) string {
	tok := ua
	if i := bytes.IndexByte(tok, ' '); i >= 0 {
		tok = tok[:i]
	}
	if v, ok := bytes.CutPrefix(tok, []byte("claude-cli/")); ok {
		tok = v
	}
	if len(tok) > 64 {
		tok = tok[:64]
	}
	return strings.ToValidUTF8(string(tok), "")
}

// splitKeyPath splits a :path that starts with dataplane.KeyPathPrefix into the key
// segment and the rest of the path, query kept: "/ak/K/v1/x?q" gives "K" and
// "/v1/x?q"; "/ak/K" gives "K" and "/"; "/ak/K?q" gives "K" and "/?q".
func splitKeyPath(path []byte) (key, rest []byte, ok bool) {
	if !bytes.HasPrefix(path, []byte(dataplane.KeyPathPrefix)) {
		return nil, path, false
	}
	seg := path[len(dataplane.KeyPathPrefix):]
	end := bytes.IndexAny(seg, "/?")
	if end < 0 {
		end = len(seg)
	}
	key, rest = seg[:end], seg[end:]
	if len(rest) == 0 || rest[0] == '?' {
		rest = append([]byte{'/'}, rest...)
	}
	return key, rest, true
}

// Path kinds for routing.
type pathKind uint8

const (
	pathOther           pathKind = iota // not /v1/: 404
	pathV1                              // other /v1/ paths: 404 (only metered endpoints go upstream)
	pathMessages                        // /v1/messages
	pathCountTokens                     // /v1/messages/count_tokens
	pathModels                          // /v1/models
	pathBedrockModel                    // /bedrock/model/{id}/{op}: Claude Code's Bedrock mode
	pathBedrockProfiles                 // /bedrock/inference-profiles
	pathBedrockOther                    // other /bedrock/ paths: 404
	pathMe                              // /me: the developer's own status
	pathNotCanonical                    // /v1/ paths in a disguised spelling: 404
)

// classify tells what path (query excluded) is.
func classify(path []byte) pathKind {
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch string(path) {
	case "/v1/messages":
		return pathMessages
	case "/v1/messages/count_tokens":
		return pathCountTokens
	case "/v1/models":
		return pathModels
	case "/me":
		return pathMe
	}
	if bytes.HasPrefix(path, []byte("/v1/")) {
		if !canonical(path) {
			return pathNotCanonical
		}
		return pathV1
	}
	if rest, ok := bytes.CutPrefix(path, []byte(bedrockModePrefix)); ok {
		switch {
		case string(rest) == "inference-profiles":
			return pathBedrockProfiles
		case bytes.HasPrefix(rest, []byte("model/")):
			return pathBedrockModel
		}
		return pathBedrockOther
	}
	return pathOther
}

// isEventStream reports whether a content-type is text/event-stream.
func isEventStream(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte("text/event-stream"))
}

// parseStatus parses a :status value.
func parseStatus(v []byte) int {
	if len(v) != 3 {
		return 0
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// parseCount parses a non-negative decimal header value such as Bedrock's
// token counts; -1 when it is not one (or absurdly long).
func parseCount(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// canonical reports whether a /v1/ path (query excluded) is spelled the one
// way clients spell Anthropic's endpoints: no percent-encoding, no empty or
// dot segments, no trailing slash. Envoy normalises most spellings before
// extproc sees them (the control plane's HCM path settings); what remains
// (/v1/messages/, /v1/messages%3Fx) might still be served by Anthropic as
// the metered endpoint, so such paths are refused, with a message saying
// why, rather than treated as some other path.
func canonical(path []byte) bool {
	if bytes.IndexByte(path, '%') >= 0 || bytes.Contains(path, []byte("//")) || path[len(path)-1] == '/' {
		return false
	}
	for seg := range bytes.SplitSeq(path[1:], []byte("/")) {
		if string(seg) == "." || string(seg) == ".." {
			return false
		}
	}
	return true
}
