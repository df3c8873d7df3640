// Package eventstream converts the application/vnd.amazon.eventstream body
// of Bedrock's InvokeModelWithResponseStream (Anthropic models) into the
// Anthropic Messages SSE stream that Claude Code expects.
//
// It owns the frame parser (prelude and message CRCs, header walking), the
// unwrapping of chunk events, the removal of Bedrock's invocation metrics,
// the mapping of exception and error frames to SSE error events, and the
// token usage seen on the stream. The parser is hand-written so that the
// steady state neither allocates nor copies more than the bytes of a frame
// split across chunks; the aws-sdk-go-v2 decoder is kept as a test oracle.
package eventstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
)

// ErrCorrupt reports an event stream that cannot be decoded: a CRC mismatch,
// an impossible length, a malformed header, or a chunk whose payload is not
// the expected base64-wrapped JSON.
var ErrCorrupt = errors.New("eventstream: corrupt Bedrock event stream")

// ErrTruncated reports a stream that ended inside a frame or before
// message_stop.
var ErrTruncated = errors.New("eventstream: Bedrock event stream ended early")

// UpstreamError is an exception or error frame sent by Bedrock.
type UpstreamError struct {
	// MessageType is "exception" or "error".
	MessageType string
	// Code is the :exception-type or :error-code header, e.g. "throttlingException".
	Code string
	// Message is the upstream message.
	Message string
	// ErrorType is the Anthropic error type it maps to, e.g. "rate_limit_error".
	ErrorType string
}

// Error implements error.
func (e *UpstreamError) Error() string {
	return fmt.Sprintf("eventstream: Bedrock %s %s: %s", e.MessageType, e.Code, e.Message)
}

// Usage is the token usage seen on a stream.
type Usage struct {
	InputTokens              int64
	OutputTokens             int64
	CacheReadInputTokens     int64
	CacheCreationInputTokens int64
}

// ErrorType maps a Bedrock exception type or error code (either
// capitalisation, optionally followed by ":…" as in x-amzn-ErrorType) to
// the Anthropic error type, following the table in docs/design.md, "The Bedrock contract".
func ErrorType(bedrockType string) string {
	if i := strings.IndexByte(bedrockType, ':'); i >= 0 {
		bedrockType = bedrockType[:i]
	}
	switch strings.ToLower(bedrockType) {
	case "throttlingexception", "servicequotaexceededexception", "modelnotreadyexception":
		return "rate_limit_error"
	case "validationexception":
		return "invalid_request_error"
	case "serviceunavailableexception":
		return "overloaded_error"
	case "modeltimeoutexception":
		return "timeout_error"
	default:
		return "api_error"
	}
}

// Converter turns event-stream bytes into SSE bytes incrementally. Feed the
// upstream body chunks to Write in order, then call Finish at the end of
// the body. A Converter is not safe for concurrent use; reuse it with Reset.
type Converter struct {
	pending []byte // bytes of a frame split across chunks
	decoded []byte // base64-decoded event JSON, reused
	done    bool
	stopped bool // message_stop seen
	err     error

	usage   Usage
	seen    [4]bool // usage fields reported by the events themselves
	metrics Usage   // from amazon-bedrock-invocationMetrics
	mseen   [4]bool
}

// NewConverter returns a Converter ready for a new stream.
func NewConverter() *Converter { return &Converter{} }

// Reset prepares c for a new stream, keeping its buffers.
func (c *Converter) Reset() {
	*c = Converter{pending: c.pending[:0], decoded: c.decoded[:0]}
}

// Done reports whether the stream has ended: after an SSE error event
// (upstream exception or corruption) or after Finish. Further input is
// ignored.
func (c *Converter) Done() bool { return c.done }

// Err returns why the stream ended in error, or nil.
func (c *Converter) Err() error { return c.err }

// Usage returns the token counts seen so far: message_start's usage, updated
// by message_delta's cumulative usage, with Bedrock's invocation metrics
// filling any count the events did not report.
func (c *Converter) Usage() Usage {
	u := c.usage
	fill := func(i int, dst *int64, v int64) {
		if !c.seen[i] && c.mseen[i] {
			*dst = v
		}
	}
	fill(0, &u.InputTokens, c.metrics.InputTokens)
	fill(1, &u.OutputTokens, c.metrics.OutputTokens)
	fill(2, &u.CacheReadInputTokens, c.metrics.CacheReadInputTokens)
	fill(3, &u.CacheCreationInputTokens, c.metrics.CacheCreationInputTokens)
	return u
}

// Write converts chunk, appending the resulting SSE bytes to dst and
// returning the extended slice (append-style, so a caller reusing one
// buffer allocates nothing). chunk is not retained. err is non-nil exactly
// when this call ended the stream in error; out then ends with the SSE
// error event, and must still be forwarded.
func (c *Converter) Write(dst, chunk []byte) (out []byte, err error) {
	if c.done {
		return dst, nil
	}
	for len(chunk) > 0 {
		if len(c.pending) > 0 || len(chunk) < preludeLen {
			if len(c.pending) < preludeLen {
				n := min(preludeLen-len(c.pending), len(chunk))
				c.pending = append(c.pending, chunk[:n]...)
				chunk = chunk[n:]
				if len(c.pending) < preludeLen {
					return dst, nil
				}
			}
			total, err := checkPrelude(c.pending)
			if err != nil {
				return c.fail(dst, err)
			}
			n := min(total-len(c.pending), len(chunk))
			c.pending = append(c.pending, chunk[:n]...)
			chunk = chunk[n:]
			if len(c.pending) < total {
				return dst, nil
			}
			dst, err = c.frame(dst, c.pending)
			c.pending = c.pending[:0]
			if err != nil {
				return dst, err
			}
			continue
		}
		total, err := checkPrelude(chunk)
		if err != nil {
			return c.fail(dst, err)
		}
		if len(chunk) < total {
			c.pending = append(c.pending[:0], chunk...)
			return dst, nil
		}
		if dst, err = c.frame(dst, chunk[:total]); err != nil {
			return dst, err
		}
		chunk = chunk[total:]
	}
	return dst, nil
}

// Finish marks the end of the upstream body. A frame left incomplete, or a
// stream that never reached message_stop, ends with an SSE error event.
func (c *Converter) Finish(dst []byte) (out []byte, err error) {
	if c.done {
		return dst, nil
	}
	switch {
	case len(c.pending) > 0:
		return c.fail(dst, fmt.Errorf("%w: %d bytes of an incomplete frame", ErrTruncated, len(c.pending)))
	case !c.stopped:
		return c.fail(dst, fmt.Errorf("%w: no message_stop", ErrTruncated))
	}
	c.done = true
	return dst, nil
}

// fail ends the stream with an api_error event describing err.
func (c *Converter) fail(dst []byte, err error) ([]byte, error) {
	dst = appendErrorPrefix(dst, "api_error")
	dst = appendJSONString(dst, "Bedrock response stream could not be read: "+err.Error())
	dst = append(dst, "}}\n\n"...)
	c.done, c.err = true, err
	c.pending = c.pending[:0]
	return dst, err
}

func appendErrorPrefix(dst []byte, typ string) []byte {
	dst = append(dst, `event: error`+"\n"+`data: {"type":"error","error":{"type":"`...)
	dst = append(dst, typ...)
	return append(dst, `","message":`...)
}

// frame handles one whole frame.
func (c *Converter) frame(dst, f []byte) ([]byte, error) {
	headers, payload, err := splitFrame(f)
	if err != nil {
		return c.fail(dst, err)
	}
	var msgType, eventType, excType, errCode, errMsg []byte
	for len(headers) > 0 {
		var name, value []byte
		var typ byte
		if name, typ, value, headers, err = nextHeader(headers); err != nil {
			return c.fail(dst, err)
		}
		if typ != typeString {
			continue
		}
		switch string(name) {
		case ":message-type":
			msgType = value
		case ":event-type":
			eventType = value
		case ":exception-type":
			excType = value
		case ":error-code":
			errCode = value
		case ":error-message":
			errMsg = value
		}
	}
	switch string(msgType) {
	case "event":
		if string(eventType) != "chunk" {
			// Other event types (none are sent today) carry no Anthropic
			// event; dropping them keeps the SSE stream well-formed.
			return dst, nil
		}
		return c.chunk(dst, payload)
	case "exception":
		return c.exception(dst, string(excType), payload)
	case "error":
		return c.upstreamError(dst, "error", string(errCode), string(errMsg))
	default:
		return c.fail(dst, fmt.Errorf("%w: unexpected :message-type %q", ErrCorrupt, msgType))
	}
}

func (c *Converter) exception(dst []byte, code string, payload []byte) ([]byte, error) {
	if code == "" {
		code = "unknownException"
	}
	it := jsonscan.StrictObject(payload)
	var raw []byte
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if k := rawName(payload, m); string(k) == "message" || string(k) == "Message" {
			raw = m.Value(payload)
		}
	}
	var msg string
	if it.Err() != nil || len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &msg) != nil {
		msg = "Bedrock " + code
		raw = nil
	}
	e := &UpstreamError{MessageType: "exception", Code: code, Message: msg, ErrorType: ErrorType(code)}
	dst = appendErrorPrefix(dst, e.ErrorType)
	if raw != nil {
		// The upstream JSON string is already valid JSON; forward it as is.
		dst = append(dst, raw...)
	} else {
		dst = appendJSONString(dst, msg)
	}
	dst = append(dst, "}}\n\n"...)
	c.done, c.err = true, e
	return dst, e
}

func (c *Converter) upstreamError(dst []byte, kind, code, msg string) ([]byte, error) {
	code = strings.ToValidUTF8(code, "\uFFFD")
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if code == "" {
		code = "unknownError"
	}
	if msg == "" {
		msg = "Bedrock " + code
	}
	e := &UpstreamError{MessageType: kind, Code: code, Message: msg, ErrorType: ErrorType(code)}
	dst = appendErrorPrefix(dst, e.ErrorType)
	dst = appendJSONString(dst, msg)
	dst = append(dst, "}}\n\n"...)
	c.done, c.err = true, e
	return dst, e
}

const metricsKey = "amazon-bedrock-invocationMetrics"

// chunk unwraps {"bytes":"<base64>",…} and emits the Anthropic event.
func (c *Converter) chunk(dst, payload []byte) ([]byte, error) {
	b64, ok := bedrockChunkBytes(payload)
	if !ok {
		it := jsonscan.StrictObject(payload)
		for m, ok := it.Next(); ok; m, ok = it.Next() {
			if string(rawName(payload, m)) == "bytes" {
				b64 = m.Value(payload)
			}
		}
		if it.Err() != nil {
			return c.fail(dst, fmt.Errorf("%w: chunk payload is not a JSON object", ErrCorrupt))
		}
		if len(b64) < 2 || b64[0] != '"' {
			return c.fail(dst, fmt.Errorf("%w: chunk payload has no \"bytes\" string", ErrCorrupt))
		}
		b64 = b64[1 : len(b64)-1]
	}
	need := base64.StdEncoding.DecodedLen(len(b64))
	if cap(c.decoded) < need {
		c.decoded = make([]byte, need)
	}
	n, err := base64.StdEncoding.Decode(c.decoded[:need], b64)
	if err != nil {
		return c.fail(dst, fmt.Errorf("%w: chunk bytes are not base64: %v", ErrCorrupt, err))
	}
	ev := c.decoded[:n]

	// One pass over the event: validate it, find "type", the metrics member
	// to cut, and the objects holding usage.
	var typ, usageObj, msgObj []byte
	cutStart, cutEnd, cutFirst := -1, -1, false
	it := jsonscan.StrictObject(ev)
	prevEnd := -1
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if cutFirst {
			cutEnd, cutFirst = m.KeyStart, false
		}
		switch string(rawName(ev, m)) {
		case "type":
			typ = m.Value(ev)
		case "usage":
			usageObj = m.Value(ev)
		case "message":
			msgObj = m.Value(ev)
		case metricsKey:
			c.readMetrics(m.Value(ev))
			if prevEnd >= 0 {
				cutStart, cutEnd = prevEnd, m.ValueEnd
			} else {
				cutStart, cutEnd, cutFirst = m.KeyStart, m.ValueEnd, true
			}
		}
		prevEnd = m.ValueEnd
	}
	if it.Err() != nil {
		return c.fail(dst, fmt.Errorf("%w: chunk event is not a JSON object", ErrCorrupt))
	}
	if len(typ) < 2 || typ[0] != '"' || strings.IndexByte(string(typ), '\\') >= 0 || len(typ) == 2 {
		return c.fail(dst, fmt.Errorf("%w: chunk event has no plain \"type\" string", ErrCorrupt))
	}
	typ = typ[1 : len(typ)-1]

	switch string(typ) {
	case "message_start":
		if msgObj != nil && msgObj[0] == '{' {
			if u, ok := field(msgObj, "usage"); ok {
				c.readUsage(u)
			}
		}
	case "message_delta":
		if usageObj != nil {
			c.readUsage(usageObj)
		}
	case "message_stop":
		c.stopped = true
	}

	// A line break in the event can only be white space between tokens
	// (the scan rejects control characters in strings); forwarded, it would
	// end the SSE data line and cut the event's JSON. A space means the
	// same. ev is this Converter's own buffer.
	if bytes.IndexByte(ev, '\n') >= 0 || bytes.IndexByte(ev, '\r') >= 0 {
		for i, ch := range ev {
			if ch == '\n' || ch == '\r' {
				ev[i] = ' '
			}
		}
	}

	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: "...)
	if cutStart >= 0 {
		dst = append(dst, ev[:cutStart]...)
		dst = append(dst, ev[cutEnd:]...)
	} else {
		dst = append(dst, ev...)
	}
	return append(dst, "\n\n"...), nil
}

// bedrockChunkBytes is the fast path for the payload shape Bedrock sends,
// {"bytes":"<base64>"} or {"bytes":"<base64>","p":"<[A-Za-z0-9]*>"}: it
// returns the base64 text without scanning it as a JSON string (base64
// holds no quote or backslash, and Decode rejects every byte outside its
// alphabet). Any other shape, valid or not, reports false and takes the
// general JSON path.
func bedrockChunkBytes(payload []byte) ([]byte, bool) {
	const head = `{"bytes":"`
	if !bytes.HasPrefix(payload, []byte(head)) {
		return nil, false
	}
	rest := payload[len(head):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil, false
	}
	b64, tail := rest[:end], rest[end+1:]
	if string(tail) == "}" {
		return b64, true
	}
	const pHead = `,"p":"`
	if len(tail) < len(pHead)+2 || string(tail[:len(pHead)]) != pHead || string(tail[len(tail)-2:]) != `"}` {
		return nil, false
	}
	for _, ch := range tail[len(pHead) : len(tail)-2] {
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9') {
			return nil, false
		}
	}
	return b64, true
}

// Names of the four counts, in Usage field order, in Anthropic's usage object
// and in Bedrock's amazon-bedrock-invocationMetrics.
var (
	usageNames   = [4]string{"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}
	metricsNames = [4]string{"inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount"}
)

func (c *Converter) readUsage(obj []byte)   { readCounts(obj, &usageNames, &c.usage, &c.seen) }
func (c *Converter) readMetrics(obj []byte) { readCounts(obj, &metricsNames, &c.metrics, &c.mseen) }

// readCounts sets the counts named in names from the JSON object obj into
// dst, marking each one found in seen.
func readCounts(obj []byte, names *[4]string, dst *Usage, seen *[4]bool) {
	if len(obj) == 0 || obj[0] != '{' {
		return
	}
	fields := [4]*int64{&dst.InputTokens, &dst.OutputTokens, &dst.CacheReadInputTokens, &dst.CacheCreationInputTokens}
	it := jsonscan.StrictObject(obj)
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		for i, name := range names {
			if string(rawName(obj, m)) != name {
				continue
			}
			if v, ok := parseCount(m.Value(obj)); ok {
				*fields[i], seen[i] = v, true
			}
			break
		}
	}
}
