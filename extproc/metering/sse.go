package metering

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// MaxEventData bounds the data SSEScanner buffers for one usage-bearing
// event. Anthropic's message_start and message_delta events are well under a
// kilobyte; an event whose data exceeds this is ignored rather than buffered.
const MaxEventData = 1 << 20

// maxEventName bounds the event names the scanner distinguishes: longer names
// are none of the ones it looks for.
const maxEventName = 32

// kind classifies an SSE event by its type.
type kind uint8

const (
	kindUnset        kind = iota // no event field yet: the type would be "message"
	kindOther                    // ping, error, content_block_stop, unknown types
	kindMessageStart             // carries message.usage
	kindMessageDelta             // carries cumulative usage
	kindContentDelta             // content_block_delta: a token arrived
	kindMessageStop              // the answer is complete
	kindBlockStart               // content_block_start: may open an Agent/Task tool call
)

func classify(name []byte) kind {
	switch string(name) {
	case "message_start":
		return kindMessageStart
	case "message_delta":
		return kindMessageDelta
	case "content_block_delta":
		return kindContentDelta
	case "message_stop":
		return kindMessageStop
	case "content_block_start":
		return kindBlockStart
	}
	return kindOther
}

// needsData reports whether events of kind k are parsed (or, for kindUnset,
// might turn out to be): their data lines must be buffered.
func (k kind) needsData() bool {
	return k == kindUnset || k == kindMessageStart || k == kindMessageDelta || k == kindBlockStart
}

// SSEScanner extracts usage from an Anthropic Messages event stream fed to it
// in chunks of any size, split at any byte. It follows the SSE parsing rules
// of the WHATWG HTML standard (§9.2.6: lines end in CRLF, LF or CR; comment
// lines; "field: value" with one optional space; events dispatched on a
// blank line and only when they carry data; an unterminated last event is
// discarded). It reads usage from message_start (message.usage) and
// message_delta (usage) events, in order, and notes the first
// content_block_delta and message_stop; every other event (ping, error,
// unknown types) only passes by.
//
// Bytes of events it does not parse are never copied: it finds line ends
// with bytes.IndexByte and skips them. Only the data of message_start and
// message_delta events (and of events whose type line has not been seen yet)
// is buffered, up to MaxEventData. One deliberate departure from the
// standard: a message_start or message_delta event whose "event:" line comes
// after a data line that was skipped under an earlier type line of the same
// event is ignored — the skipped data cannot be recovered.
//
// The zero value is ready to use. An SSEScanner is not safe for concurrent
// use.
type SSEScanner struct {
	counts counts

	// Line assembly across chunks.
	carry   []byte // start of a line that may matter, kept across chunks
	skip    bool   // discarding the rest of the current line
	afterCR bool   // the previous chunk ended in CR: a leading LF belongs to it

	// The event being assembled.
	kind        kind
	hasData     bool // a data field was seen (the event will dispatch)
	nData       int  // data lines buffered
	skipped     bool // a data line was skipped
	overflow    bool // data exceeded MaxEventData
	data        []byte
	sawUsage    bool
	sawContent  bool
	sawStop     bool
	eventsTotal int

	// model is message_start's message.model, kept in place so that
	// reading it costs no allocation until Model is called.
	model    [MaxModelLen]byte
	modelLen int
	// spawns counts the subagent tool calls (AgentSpawns).
	spawns int
}

// MaxModelLen bounds the model name an SSEScanner keeps; a longer one is
// not kept (Anthropic's ids are under 40 bytes).
const MaxModelLen = 96

// Write feeds the next chunk of the stream. It never fails and always
// consumes all of p; it implements io.Writer.
func (s *SSEScanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.afterCR {
			s.afterCR = false
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		i := lineEnd(p)
		if i < 0 {
			s.partial(p)
			break
		}
		switch {
		case s.skip:
			s.skip = false
		case len(s.carry) > 0:
			s.carry = append(s.carry, p[:i]...)
			s.line(s.carry)
			s.carry = s.carry[:0]
		default:
			s.line(p[:i])
		}
		if p[i] == '\r' {
			if i+1 == len(p) {
				s.afterCR = true
			} else if p[i+1] == '\n' {
				i++
			}
		}
		p = p[i+1:]
	}
	return n, nil
}

// lineEnd returns the index of the first CR or LF in p, or -1.
func lineEnd(p []byte) int {
	i := bytes.IndexByte(p, '\n')
	var q []byte
	if i < 0 {
		q = p
	} else {
		q = p[:i]
	}
	// CR-only line ends are rare; looking for one within the line is cheap
	// because the line is already in cache.
	if j := bytes.IndexByte(q, '\r'); j >= 0 {
		return j
	}
	return i
}

// partial handles the unterminated tail p of a chunk: it keeps the bytes
// only if the line may matter, deciding from as little as possible.
func (s *SSEScanner) partial(p []byte) {
	if s.skip {
		return
	}
	line := p
	if len(s.carry) > 0 {
		s.carry = append(s.carry, p...)
		line = s.carry
	}
	switch s.judge(line) {
	case keep:
		if len(s.carry) == 0 {
			s.carry = append(s.carry, p...)
		}
	case drop:
		s.carry = s.carry[:0]
		s.skip = true
	}
}

type verdict uint8

const (
	keep verdict = iota // the line may matter: keep its bytes
	drop                // the line cannot matter (effects already applied)
)

// judge decides about an unterminated line. When it drops a line, it
// applies the effects the whole line would have had.
func (s *SSEScanner) judge(line []byte) verdict {
	if line[0] == ':' {
		return drop // comment
	}
	head := line
	if len(head) > len("event:") {
		head = head[:len("event:")]
	}
	c := bytes.IndexByte(head, ':')
	if c < 0 {
		// The field name is not complete yet: keep it while it can still
		// become "data" or "event".
		if isPrefix(line, "data") || isPrefix(line, "event") {
			return keep
		}
		return drop // some other field (id, retry, unknown): ignored
	}
	switch string(line[:c]) {
	case "data":
		s.hasData = true
		if !s.kind.needsData() {
			s.skipped = true
			return drop
		}
		if len(line) > MaxEventData+len("data: ") {
			s.overflow = true
			return drop
		}
		return keep
	case "event":
		if len(line) > len("event: ")+maxEventName {
			s.kind = kindOther
			return drop
		}
		return keep
	}
	return drop
}

// isPrefix reports whether b is a prefix of s.
func isPrefix(b []byte, s string) bool {
	return len(b) <= len(s) && string(b) == s[:len(b)]
}

// line handles one complete line.
func (s *SSEScanner) line(b []byte) {
	if len(b) == 0 {
		s.dispatch()
		return
	}
	if b[0] == ':' {
		return
	}
	var name, value []byte
	if c := bytes.IndexByte(b, ':'); c >= 0 {
		name, value = b[:c], b[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	} else {
		name = b
	}
	switch string(name) {
	case "event":
		if len(value) > maxEventName {
			s.kind = kindOther
		} else {
			s.kind = classify(value)
		}
	case "data":
		s.hasData = true
		switch {
		case !s.kind.needsData():
			s.skipped = true
		case s.overflow:
		case len(s.data)+1+len(value) > MaxEventData:
			s.overflow = true
		default:
			if s.nData > 0 {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, value...)
			s.nData++
		}
	}
}

// dispatch ends the current event.
func (s *SSEScanner) dispatch() {
	if s.hasData {
		s.eventsTotal++
		switch s.kind {
		case kindMessageStart, kindMessageDelta:
			s.parseUsage()
		case kindContentDelta:
			s.sawContent = true
		case kindMessageStop:
			s.sawStop = true
		case kindBlockStart:
			s.parseBlockStart()
		}
	}
	s.kind = kindUnset
	s.hasData = false
	s.nData = 0
	s.skipped = false
	s.overflow = false
	s.data = s.data[:0]
}

// parseUsage applies the usage of the buffered message_start or
// message_delta event. Data that is not valid JSON is ignored as a whole
// rather than trusted in part; validating costs about a microsecond for the
// two small events per stream.
func (s *SSEScanner) parseUsage() {
	if s.skipped || s.overflow || !json.Valid(s.data) {
		return
	}
	obj := s.data
	if s.kind == kindMessageStart {
		msg, ok := jsonscan.Find(obj, "message")
		if !ok || msg[0] != '{' {
			return
		}
		obj = msg
		s.keepModel(msg)
	}
	if u, ok := jsonscan.Find(obj, "usage"); ok && u[0] == '{' {
		s.counts.apply(u)
		s.sawUsage = true
	}
}

// keepModel keeps the "model" member of message_start's message object.
// A plain string is copied as it is (no allocation); one with escapes is
// decoded by jsonscan.String.
func (s *SSEScanner) keepModel(msg []byte) {
	raw, ok := jsonscan.Find(msg, "model")
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return
	}
	if inner := raw[1 : len(raw)-1]; len(inner) <= MaxModelLen && bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		s.modelLen = copy(s.model[:], inner)
		return
	}
	m, ok := jsonscan.String(raw)
	if !ok || len(m) > MaxModelLen {
		return
	}
	s.modelLen = copy(s.model[:], m)
}

// Model returns the model named by the stream's message_start event, ""
// before one was seen (or when it named none, or one over MaxModelLen).
func (s *SSEScanner) Model() string { return string(s.model[:s.modelLen]) }

// parseBlockStart counts a content_block_start event that opens a tool_use
// block calling Claude Code's subagent tool ("Agent", called "Task" by older
// releases). Its data is a small object (the block's input arrives later, in
// deltas), so reading three members costs little; the scanner reads nothing
// else of the answer's content.
func (s *SSEScanner) parseBlockStart() {
	if s.skipped || s.overflow || !json.Valid(s.data) {
		return
	}
	blk, ok := jsonscan.Find(s.data, "content_block")
	if !ok || blk[0] != '{' {
		return
	}
	if IsSubagentCall(blk) {
		s.spawns++
	}
}

// IsSubagentCall reports whether the content block object raw (valid JSON)
// is a tool_use
// block calling Claude Code's subagent tool: name "Agent" (2.1 releases) or
// "Task" (older ones).
func IsSubagentCall(raw []byte) bool {
	var typ, name []byte
	it := jsonscan.Object(raw)
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		switch {
		case jsonscan.KeyIs(k, "type"):
			typ = v
		case jsonscan.KeyIs(k, "name"):
			name = v
		}
	}
	return isString(typ, "tool_use") && (isString(name, "Agent") || isString(name, "Task"))
}

// isString reports whether raw is a JSON string that decodes to want.
func isString(raw []byte, want string) bool {
	return len(raw) >= 2 && raw[0] == '"' && jsonscan.KeyIs(raw, want)
}

// AgentSpawns returns how many tool_use blocks calling Claude Code's
// subagent tool (Agent or Task) the answer opened so far: each starts a
// subagent once Claude Code runs it.
func (s *SSEScanner) AgentSpawns() int { return s.spawns }

// usage.Usage returns the usage seen so far.
func (s *SSEScanner) Usage() usage.Usage { return s.counts.usage() }

// SawUsage reports whether a usage object has been seen.
func (s *SSEScanner) SawUsage() bool { return s.sawUsage }

// ContentStarted reports whether a content_block_delta event has been
// dispatched: the first token reached the client.
func (s *SSEScanner) ContentStarted() bool { return s.sawContent }

// Completed reports whether the message_stop event has been dispatched.
func (s *SSEScanner) Completed() bool { return s.sawStop }

// Events returns the number of events dispatched so far.
func (s *SSEScanner) Events() int { return s.eventsTotal }

// Reset prepares s for a new stream, keeping its buffers.
func (s *SSEScanner) Reset() {
	*s = SSEScanner{carry: s.carry[:0], data: s.data[:0]}
}
