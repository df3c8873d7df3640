package fakebedrock

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

// Usage is the token accounting the fake reports. Input excludes cache
// reads and writes, as in Anthropic's usage.
type Usage struct {
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int
}

// Latencies reported in amazon-bedrock-invocationMetrics and the
// X-Amzn-Bedrock-Invocation-Latency header (the values of the real capture).
const (
	InvocationLatency = 1798
	FirstByteLatency  = 1507
)

// Event is one Anthropic streaming event, sent as one event-stream chunk
// frame whose payload is {"bytes":"<base64 of Data as JSON>","p":"…"}.
// Data is marshalled with encoding/json; a json.RawMessage is sent as is.
type Event struct {
	Type string
	Data any
}

// Exception is an in-stream exception frame (:message-type exception).
type Exception struct {
	// Type is the :exception-type header, e.g. "throttlingException",
	// "modelStreamErrorException", "validationException",
	// "modelTimeoutException", "serviceUnavailableException",
	// "internalServerException".
	Type    string
	Message string
}

// Reply is how the fake answers one request that passed authentication and
// validation. A zero Reply means "the default answer" (see Echo).
type Reply struct {
	// Status defaults to 200. A status ≥ 300 sends Header and Body as an
	// error answer on every endpoint (see Error).
	Status int
	// Header is added to the answer's headers.
	Header http.Header
	// Events are streamed on /invoke-with-response-stream.
	Events []Event
	// Exception, when set, is sent as an exception frame after Events.
	Exception *Exception
	// Frames are raw event-stream messages sent after Events and Exception
	// (for :message-type error frames and other oddities).
	Frames []eventstream.Message
	// Abort drops the connection after the frames instead of ending the
	// response cleanly.
	Abort bool
	// Body is sent as is on /invoke and /count-tokens (and on the stream
	// endpoint when there are no Events, Exception or Frames).
	Body []byte
	// Gap is the pause before each frame of a stream.
	Gap time.Duration
}

// Block is one content block of an answer. ToolName makes a tool_use block,
// else Thinking a thinking block, else RedactedThinking a redacted_thinking
// block, else it is a text block.
type Block struct {
	// Text is a text block's text, split into Chunks deltas when Chunks > 1.
	Text   string
	Chunks int
	// ToolName and ToolInput make a tool_use block instead; its input JSON
	// is split into Chunks input_json_delta pieces.
	ToolName  string
	ToolInput map[string]any
	ToolID    string
	// Thinking makes a thinking block with this text, split into Chunks
	// thinking_delta deltas, followed by one signature_delta carrying
	// thinking.Sign(Thinking) (Signature instead when set, to script a bad
	// one). Signatures are the same as fakeanthropic's: each fake accepts
	// the other's, as Bedrock and the Claude API do.
	Thinking  string
	Signature string
	// RedactedThinking makes a redacted_thinking block with this data.
	RedactedThinking string
}

func (b Block) signature() string {
	if b.Signature != "" {
		return b.Signature
	}
	return thinking.Sign(b.Thinking)
}

// obj builds a JSON object with keys in the given order: obj("a", 1, "b", x).
func obj(kv ...any) json.RawMessage {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(kv[i])
		v, err := marshal(kv[i+1])
		if err != nil {
			panic(fmt.Sprintf("fakebedrock: marshal %v: %v", kv[i], err))
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// marshal is json.Marshal without HTML escaping ("<" stays "<"), as the
// Anthropic API writes JSON.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func usageStart(u Usage) json.RawMessage {
	return obj("input_tokens", u.Input,
		"cache_creation_input_tokens", u.CacheWrite5m+u.CacheWrite1h,
		"cache_read_input_tokens", u.CacheRead,
		"cache_creation", obj("ephemeral_5m_input_tokens", u.CacheWrite5m, "ephemeral_1h_input_tokens", u.CacheWrite1h),
		"output_tokens", 1)
}

// Metrics returns the amazon-bedrock-invocationMetrics object Bedrock puts in
// message_stop: inputTokenCount, outputTokenCount, invocationLatency,
// firstByteLatency, plus cacheReadInputTokenCount / cacheWriteInputTokenCount
// when non-zero.
func Metrics(u Usage) json.RawMessage {
	kv := []any{"inputTokenCount", u.Input, "outputTokenCount", u.Output,
		"invocationLatency", InvocationLatency, "firstByteLatency", FirstByteLatency}
	if u.CacheRead > 0 {
		kv = append(kv, "cacheReadInputTokenCount", u.CacheRead)
	}
	if w := u.CacheWrite5m + u.CacheWrite1h; w > 0 {
		kv = append(kv, "cacheWriteInputTokenCount", w)
	}
	return obj(kv...)
}

// MessageID is the id of every message the fake answers with.
const MessageID = "msg_bdrk_01FakeBedrock0000000000"

// Stream builds the events of a complete answer as Bedrock streams them for
// an Anthropic model, in the shape of the real capture: message_start
// (input and cache usage, output 1), per block content_block_start /
// content_block_delta… / content_block_stop, message_delta (stop_reason
// end_turn or tool_use, usage {"output_tokens":N}), and message_stop carrying
// "amazon-bedrock-invocationMetrics" (see Metrics). model is the Anthropic
// model name Bedrock reports, e.g. "claude-sonnet-4-5-20250929".
func Stream(model string, u Usage, blocks ...Block) []Event {
	evs := []Event{{"message_start", obj("type", "message_start", "message", obj(
		"model", model, "id", MessageID, "type", "message", "role", "assistant",
		"content", []any{}, "stop_reason", nil, "stop_sequence", nil, "usage", usageStart(u)))}}
	stop := "end_turn"
	for i, b := range blocks {
		if b.ToolName != "" {
			stop = "tool_use"
			input, _ := marshal(b.ToolInput)
			if b.ToolInput == nil {
				input = []byte("{}")
			}
			evs = append(evs, Event{"content_block_start", obj("type", "content_block_start", "index", i,
				"content_block", obj("type", "tool_use", "id", b.ToolID, "name", b.ToolName, "input", obj()))})
			for _, part := range split(string(input), b.Chunks) {
				evs = append(evs, Event{"content_block_delta", obj("type", "content_block_delta", "index", i,
					"delta", obj("type", "input_json_delta", "partial_json", part))})
			}
			evs = append(evs, Event{"content_block_stop", obj("type", "content_block_stop", "index", i)})
			continue
		}
		if b.Thinking != "" {
			evs = append(evs, Event{"content_block_start", obj("type", "content_block_start", "index", i,
				"content_block", obj("type", "thinking", "thinking", "", "signature", ""))})
			for _, part := range split(b.Thinking, b.Chunks) {
				evs = append(evs, Event{"content_block_delta", obj("type", "content_block_delta", "index", i,
					"delta", obj("type", "thinking_delta", "thinking", part))})
			}
			evs = append(evs,
				Event{"content_block_delta", obj("type", "content_block_delta", "index", i,
					"delta", obj("type", "signature_delta", "signature", b.signature()))},
				Event{"content_block_stop", obj("type", "content_block_stop", "index", i)})
			continue
		}
		if b.RedactedThinking != "" {
			evs = append(evs,
				Event{"content_block_start", obj("type", "content_block_start", "index", i,
					"content_block", obj("type", "redacted_thinking", "data", b.RedactedThinking))},
				Event{"content_block_stop", obj("type", "content_block_stop", "index", i)})
			continue
		}
		evs = append(evs, Event{"content_block_start", obj("type", "content_block_start", "index", i,
			"content_block", obj("type", "text", "text", ""))})
		for _, part := range split(b.Text, b.Chunks) {
			evs = append(evs, Event{"content_block_delta", obj("type", "content_block_delta", "index", i,
				"delta", obj("type", "text_delta", "text", part))})
		}
		evs = append(evs, Event{"content_block_stop", obj("type", "content_block_stop", "index", i)})
	}
	return append(evs,
		Event{"message_delta", obj("type", "message_delta",
			"delta", obj("stop_reason", stop, "stop_sequence", nil), "usage", obj("output_tokens", u.Output))},
		Event{"message_stop", obj("type", "message_stop", "amazon-bedrock-invocationMetrics", Metrics(u))})
}

// Message builds the JSON body InvokeModel returns for the same answer.
func Message(model string, u Usage, blocks ...Block) []byte {
	content := []json.RawMessage{}
	stop := "end_turn"
	for _, b := range blocks {
		if b.ToolName != "" {
			stop = "tool_use"
			in := b.ToolInput
			if in == nil {
				in = map[string]any{}
			}
			content = append(content, obj("type", "tool_use", "id", b.ToolID, "name", b.ToolName, "input", in))
			continue
		}
		switch {
		case b.Thinking != "":
			content = append(content, obj("type", "thinking", "thinking", b.Thinking, "signature", b.signature()))
		case b.RedactedThinking != "":
			content = append(content, obj("type", "redacted_thinking", "data", b.RedactedThinking))
		default:
			content = append(content, obj("type", "text", "text", b.Text))
		}
	}
	usage := obj("input_tokens", u.Input,
		"cache_creation_input_tokens", u.CacheWrite5m+u.CacheWrite1h,
		"cache_read_input_tokens", u.CacheRead,
		"cache_creation", obj("ephemeral_5m_input_tokens", u.CacheWrite5m, "ephemeral_1h_input_tokens", u.CacheWrite1h),
		"output_tokens", u.Output)
	return obj("model", model, "id", MessageID, "type", "message", "role", "assistant",
		"content", content, "stop_reason", stop, "stop_sequence", nil, "usage", usage)
}

// Answer is a complete answer for either endpoint: Events (Stream) for
// /invoke-with-response-stream, Body (Message) for /invoke, with the
// X-Amzn-Bedrock-{Input,Output}-Token-Count and -Invocation-Latency headers
// Bedrock sends with InvokeModel.
func Answer(model string, u Usage, blocks ...Block) Reply {
	h := http.Header{}
	h.Set("X-Amzn-Bedrock-Input-Token-Count", strconv.Itoa(u.Input))
	h.Set("X-Amzn-Bedrock-Output-Token-Count", strconv.Itoa(u.Output))
	h.Set("X-Amzn-Bedrock-Invocation-Latency", strconv.Itoa(InvocationLatency))
	if u.CacheRead > 0 {
		h.Set("X-Amzn-Bedrock-Cache-Read-Input-Token-Count", strconv.Itoa(u.CacheRead))
	}
	if w := u.CacheWrite5m + u.CacheWrite1h; w > 0 {
		h.Set("X-Amzn-Bedrock-Cache-Write-Input-Token-Count", strconv.Itoa(w))
	}
	return Reply{Header: h, Events: Stream(model, u, blocks...), Body: Message(model, u, blocks...)}
}

// Text is Answer with one text block split into chunks deltas.
func Text(model, text string, chunks int, u Usage) Reply {
	return Answer(model, u, Block{Text: text, Chunks: chunks})
}

// ToolUse is Answer with an optional text block followed by one tool_use
// block (stop_reason tool_use), so Claude Code runs the tool and comes back
// with a tool_result.
func ToolUse(model, text, id, name string, input map[string]any, u Usage) Reply {
	var blocks []Block
	if text != "" {
		blocks = append(blocks, Block{Text: text})
	}
	return Answer(model, u, append(blocks, Block{ToolID: id, ToolName: name, ToolInput: input, Chunks: 2})...)
}

// Error is an HTTP error answer as Bedrock sends it: the status, header
// x-amzn-ErrorType "<typ>:http://internal.amazon.com/coral/com.amazon.bedrock/",
// content-type application/json and body {"message":"<message>"}.
func Error(status int, typ, message string) Reply {
	return errorReply(status, typ, "com.amazon.bedrock", message)
}

func errorReply(status int, typ, ns, message string) Reply {
	h := http.Header{}
	h.Set("X-Amzn-Errortype", typ+":http://internal.amazon.com/coral/"+ns+"/")
	h.Set("Content-Type", "application/json")
	return Reply{Status: status, Header: h, Body: obj("message", message)}
}

// Throttled is Bedrock's 429 ThrottlingException answer.
func Throttled() Reply {
	return Error(http.StatusTooManyRequests, "ThrottlingException", "Too many requests, please wait before trying again.")
}

// StreamException streams events and then an exception frame of type typ
// (e.g. "throttlingException", "modelStreamErrorException") with
// {"message":message}.
func StreamException(typ, message string, events ...Event) Reply {
	return Reply{Events: events, Exception: &Exception{Type: typ, Message: message}}
}

// CountTokens is a CountTokens answer {"inputTokens":n}.
func CountTokens(n int) Reply {
	return Reply{Body: obj("inputTokens", n)}
}

// CountTokensUnsupported is Bedrock's answer for a model that cannot count
// tokens.
func CountTokensUnsupported() Reply {
	return Error(http.StatusBadRequest, "ValidationException", "The provided model doesn't support counting tokens.")
}

const padding = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// ChunkFrame builds the event-stream message for one event, as Bedrock does:
// headers :event-type chunk, :content-type application/json, :message-type
// event (in that order) and payload {"bytes":"<base64>","p":"<padding>"},
// where the padding is a prefix of the alphabet of 1 + len(json)%len(alphabet)
// characters.
func ChunkFrame(data []byte) eventstream.Message {
	var hs eventstream.Headers
	hs.Set(":event-type", eventstream.StringValue("chunk"))
	hs.Set(":content-type", eventstream.StringValue("application/json"))
	hs.Set(":message-type", eventstream.StringValue("event"))
	p := padding[:1+len(data)%len(padding)]
	return eventstream.Message{Headers: hs, Payload: obj("bytes", base64.StdEncoding.EncodeToString(data), "p", p)}
}

// ExceptionFrame builds an exception message: headers :exception-type,
// :content-type application/json, :message-type exception; payload
// {"message":…}.
func ExceptionFrame(e Exception) eventstream.Message {
	var hs eventstream.Headers
	hs.Set(":exception-type", eventstream.StringValue(e.Type))
	hs.Set(":content-type", eventstream.StringValue("application/json"))
	hs.Set(":message-type", eventstream.StringValue("exception"))
	return eventstream.Message{Headers: hs, Payload: obj("message", e.Message)}
}

// frames returns the event-stream messages the fake sends for r on the
// stream endpoint, in order.
func (r Reply) frames() ([]eventstream.Message, error) {
	var out []eventstream.Message
	for _, ev := range r.Events {
		data, err := marshal(ev.Data)
		if err != nil {
			return nil, fmt.Errorf("fakebedrock: event %s: %w", ev.Type, err)
		}
		out = append(out, ChunkFrame(data))
	}
	if r.Exception != nil {
		out = append(out, ExceptionFrame(*r.Exception))
	}
	return append(out, r.Frames...), nil
}

// Encode returns the whole event-stream body the fake would send for the
// reply's Events, Exception and Frames.
func (r Reply) Encode() ([]byte, error) {
	frames, err := r.frames()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := eventstream.NewEncoder()
	for _, f := range frames {
		if err := enc.Encode(&b, f); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// AnthropicModel turns a Bedrock model id into the Anthropic model name
// Bedrock reports in its answers: the inference-profile prefix (us., eu., …),
// "anthropic." and a "-v1:0"/"-v1" suffix are dropped, as is an ARN's path.
// "us.anthropic.claude-sonnet-4-5-20250929-v1:0" → "claude-sonnet-4-5-20250929".
func AnthropicModel(modelID string) string {
	m := modelID
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	if i := strings.Index(m, "anthropic."); i >= 0 {
		m = m[i+len("anthropic."):]
	}
	if i := strings.LastIndex(m, "-v"); i > 0 {
		rest := m[i+2:]
		if j := strings.IndexByte(rest, ':'); j >= 0 {
			rest = rest[:j]
		}
		if _, err := strconv.Atoi(rest); err == nil && rest != "" {
			m = m[:i]
		}
	}
	return m
}

func split(s string, n int) []string {
	if n <= 1 || len(s) < n {
		return []string{s}
	}
	var out []string
	size := (len(s) + n - 1) / n
	for len(s) > 0 {
		k := min(size, len(s))
		// Keep UTF-8 sequences whole.
		for k < len(s) && s[k]&0xC0 == 0x80 {
			k++
		}
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}
