package metering

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/usage"
)

type scanResult struct {
	Usage    usage.Usage
	Content  bool
	Stop     bool
	SawUsage bool
	Events   int
	Model    string
	Spawns   int
}

func scanChunks(chunks [][]byte) scanResult {
	var s SSEScanner
	for _, c := range chunks {
		if n, err := s.Write(c); n != len(c) || err != nil {
			panic(fmt.Sprintf("Write = %d, %v", n, err))
		}
	}
	return scanResult{s.Usage(), s.ContentStarted(), s.Completed(), s.SawUsage(), s.Events(), s.Model(), s.AgentSpawns()}
}

// split cuts b into chunks: size 0 means random sizes from rng.
func split(b []byte, size int, rng *rand.Rand) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := size
		if n == 0 {
			n = 1 + rng.IntN(len(b))
		}
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSSEScanner(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want scanResult
	}{
		{
			name: "tool use with 1h cache split",
			in:   readFile(t, "testdata/stream-tool-use.sse"),
			want: scanResult{
				Usage: usage.Usage{InputTokens: 6, OutputTokens: 143, CacheReadInputTokens: 14217,
					CacheWrite5mInputTokens: 1024, CacheWrite1hInputTokens: 10808},
				Content: true, Stop: true, SawUsage: true, Events: 25, Model: "claude-opus-5-5",
			},
		},
		{
			name: "legacy cache_creation_input_tokens, CRLF",
			in:   readFile(t, "testdata/stream-legacy-crlf.sse"),
			want: scanResult{
				Usage:   usage.Usage{InputTokens: 25, OutputTokens: 15, CacheWrite5mInputTokens: 3000},
				Content: true, Stop: true, SawUsage: true, Events: 7, Model: "claude-sonnet-4-5-20250929",
			},
		},
		{
			name: "overloaded mid-stream",
			in:   readFile(t, "testdata/stream-overloaded.sse"),
			want: scanResult{
				Usage:   usage.Usage{InputTokens: 1200, OutputTokens: 1, CacheReadInputTokens: 52000},
				Content: true, SawUsage: true, Events: 4, Model: "claude-opus-5-5",
			},
		},
		{
			name: "CR line ends, comments, unknown fields, no space after colon",
			in: []byte(": comment\rid: 7\rretry: 10\revent:message_start\rdata:{\"message\":{\"usage\":{\"input_tokens\":5}}}\r\r" +
				"event: message_delta\rdata: {\"usage\":{\"output_tokens\":9}}\r\r"),
			want: scanResult{Usage: usage.Usage{InputTokens: 5, OutputTokens: 9}, SawUsage: true, Events: 2},
		},
		{
			name: "multi-line data joined with LF",
			in:   []byte("event: message_delta\ndata: {\"usage\":\ndata: {\"output_tokens\":3}}\n\n"),
			want: scanResult{Usage: usage.Usage{OutputTokens: 3}, SawUsage: true, Events: 1},
		},
		{
			name: "data before event line",
			in:   []byte("data: {\"usage\":{\"output_tokens\":4}}\nevent: message_delta\n\n"),
			want: scanResult{Usage: usage.Usage{OutputTokens: 4}, SawUsage: true, Events: 1},
		},
		{
			name: "type changed after skipped data is ignored",
			in:   []byte("event: ping\ndata: {\"usage\":{\"output_tokens\":4}}\nevent: message_delta\n\n"),
			want: scanResult{Events: 1},
		},
		{
			name: "unterminated last event is discarded",
			in:   []byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n"),
			want: scanResult{},
		},
		{
			name: "event without data is not dispatched",
			in:   []byte("event: message_stop\n\nevent: content_block_delta\n\n"),
			want: scanResult{},
		},
		{
			name: "invalid JSON data ignored, later values kept",
			in: []byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\n" +
				"event: message_delta\ndata: {\"usage\":{\"output_tokens\":5}\n\n" +
				"event: message_delta\ndata: {\"usage\":{\"output_tokens\":\"6\",\"input_tokens\":1.5,\"cache_read_input_tokens\":null}}\n\n"),
			want: scanResult{Usage: usage.Usage{OutputTokens: 4}, SawUsage: true, Events: 3},
		},
		{
			name: "duplicate keys: last wins",
			in:   []byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":4,\"output_tokens\":7}}\n\n"),
			want: scanResult{Usage: usage.Usage{OutputTokens: 7}, SawUsage: true, Events: 1},
		},
		{
			name: "long event name is other",
			in:   []byte("event: message_delta_message_delta_message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\n"),
			want: scanResult{Events: 1},
		},
		{
			name: "model with escapes decoded, later message_start wins",
			in: []byte("event: message_start\ndata: {\"message\":{\"model\":\"first\",\"usage\":{}}}\n\n" +
				"event: message_start\ndata: {\"message\":{\"model\":\"claude-\\u0073onnet\"}}\n\n"),
			want: scanResult{SawUsage: true, Events: 2, Model: "claude-sonnet"},
		},
		{
			name: "model not a string, or too long, is not kept",
			in: []byte("event: message_start\ndata: {\"message\":{\"model\":7}}\n\n" +
				"event: message_start\ndata: {\"message\":{\"model\":\"" + strings.Repeat("m", MaxModelLen+1) + "\"}}\n\n"),
			want: scanResult{Events: 2},
		},
		{
			name: "model of message_delta is not the message's",
			in:   []byte("event: message_delta\ndata: {\"model\":\"x\",\"usage\":{\"output_tokens\":1}}\n\n"),
			want: scanResult{Usage: usage.Usage{OutputTokens: 1}, SawUsage: true, Events: 1},
		},
		{
			name: "subagent calls counted: Agent and Task tool_use blocks only",
			in: []byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"Agent\",\"input\":{}}}\n\n" +
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"Bash\",\"input\":{}}}\n\n" +
				"event: content_block_start\ndata: {\"index\":3,\"content_block\":{\"name\":\"\\u0054ask\",\"type\":\"tool_use\",\"input\":{}}}\n\n" +
				"event: content_block_start\ndata: {\"index\":4,\"content_block\":{\"type\":\"text\",\"text\":\"Agent\",\"name\":\"Agent\"}}\n\n" +
				"event: content_block_start\ndata: {\"index\":5,\"content_block\":{\"type\":\"tool_use\",\"name\":\"Agent\"}\n\n"),
			want: scanResult{Events: 6, Spawns: 2},
		},
		{
			name: "case-sensitive field and type names",
			in:   []byte("Event: message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\nevent: Message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\n"),
			want: scanResult{Events: 2},
		},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{len(tt.in) + 1, 1, 2, 3, 7, 64, 0, 0, 0} {
				if got := scanChunks(split(tt.in, size, rng)); got != tt.want {
					t.Fatalf("chunk size %d: got %+v, want %+v", size, got, tt.want)
				}
			}
			if got := reference(tt.in); got != tt.want {
				t.Fatalf("reference parser disagrees with the expectation: %+v", got)
			}
		})
	}
}

func TestSSEScannerReset(t *testing.T) {
	var s SSEScanner
	s.Write(readFile(t, "testdata/stream-tool-use.sse"))
	s.Write([]byte("event: message_delta\ndata: {\"usa")) // leaves state behind
	s.Reset()
	s.Write([]byte("ge\":{\"output_tokens\":1}}\n\n"))
	if s.Usage() != (usage.Usage{}) || s.Events() != 0 || s.ContentStarted() || s.Completed() {
		t.Fatalf("after Reset: %+v events %d", s.Usage(), s.Events())
	}
}

func TestSSEScannerOversizedData(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxEventData)
	stream := append([]byte("event: message_delta\ndata: {\"usage\":{\"output_tokens\":4},\"pad\":\""), big...)
	stream = append(stream, "\"}\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":5}}\n\n"...)
	for _, size := range []int{len(stream), 4096} {
		got := scanChunks(split(stream, size, nil))
		want := scanResult{Usage: usage.Usage{OutputTokens: 5}, SawUsage: true, Events: 2}
		if got != want {
			t.Fatalf("chunk size %d: got %+v, want %+v", size, got, want)
		}
	}
}

func TestFromJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want usage.Usage
		ok   bool
	}{
		{"message", string(readFile(t, "testdata/message.json")),
			usage.Usage{InputTokens: 12, OutputTokens: 9, CacheReadInputTokens: 2000, CacheWrite5mInputTokens: 40, CacheWrite1hInputTokens: 60}, true},
		{"legacy cache field", `{"usage":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":30}}`,
			usage.Usage{InputTokens: 1, OutputTokens: 2, CacheWrite5mInputTokens: 30}, true},
		{"error body", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, usage.Usage{}, false},
		{"usage not an object", `{"usage":null}`, usage.Usage{}, false},
		{"not JSON", `<html>`, usage.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromJSON([]byte(tt.in))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("FromJSON = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if n, ok := CountedTokens(readFile(t, "testdata/count_tokens.json")); n != 14503 || !ok {
		t.Errorf("CountedTokens = %d, %v; want 14503, true", n, ok)
	}
	if _, ok := CountedTokens([]byte(`{"type":"error"}`)); ok {
		t.Error("CountedTokens of an error body: ok = true")
	}
}

// reference is a deliberately plain SSE parser (whole input at once, line by
// line as the WHATWG standard describes) with usage decoded by encoding/json:
// the oracle for SSEScanner.
func reference(stream []byte) scanResult {
	var lines []string
	for len(stream) > 0 {
		i := bytes.IndexAny(stream, "\r\n")
		if i < 0 {
			break // an unterminated last line is never processed
		}
		lines = append(lines, string(stream[:i]))
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
	}
	var (
		res      scanResult
		c        counts
		typ      string
		typSet   bool
		data     []string
		skipped  bool
		dataSeen bool
	)
	usageType := func(t string) bool { return t == "message_start" || t == "message_delta" }
	buffered := func(t string) bool { return usageType(t) || t == "content_block_start" }
	for _, l := range lines {
		if l == "" {
			if dataSeen {
				res.Events++
				joined := ""
				for i, d := range data {
					if i > 0 {
						joined += "\n"
					}
					joined += d
				}
				switch {
				case !typSet:
				case usageType(typ) && !skipped && len(joined) <= MaxEventData:
					if u, ok := referenceUsage(typ, []byte(joined)); ok {
						res.SawUsage = true
						u.mergeInto(&c)
					}
					if m, ok := referenceModel(typ, []byte(joined)); ok {
						res.Model = m
					}
				case typ == "content_block_start" && !skipped && len(joined) <= MaxEventData:
					if referenceSpawn([]byte(joined)) {
						res.Spawns++
					}
				case typ == "content_block_delta":
					res.Content = true
				case typ == "message_stop":
					res.Stop = true
				}
			}
			typ, typSet, data, skipped, dataSeen = "", false, nil, false, false
			continue
		}
		if l[0] == ':' {
			continue
		}
		name, value := l, ""
		if i := bytes.IndexByte([]byte(l), ':'); i >= 0 {
			name, value = l[:i], l[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch name {
		case "event":
			typ, typSet = value, true
		case "data":
			dataSeen = true
			if typSet && !buffered(typ) {
				skipped = true
			}
			data = append(data, value)
		}
	}
	res.Usage = c.usage()
	return res
}

// referenceSpawn decodes a content_block_start event's data with
// encoding/json and reports whether it opens an Agent or Task tool call.
func referenceSpawn(data []byte) bool {
	var ev struct {
		ContentBlock json.RawMessage `json:"content_block"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return false
	}
	var blk map[string]json.RawMessage
	if json.Unmarshal(ev.ContentBlock, &blk) != nil || blk == nil {
		return false
	}
	var typ, name string
	if json.Unmarshal(blk["type"], &typ) != nil || json.Unmarshal(blk["name"], &name) != nil {
		return false
	}
	return typ == "tool_use" && (name == "Agent" || name == "Task")
}

type refUsage map[string]json.RawMessage

// referenceModel decodes message_start's message.model with encoding/json.
func referenceModel(typ string, data []byte) (string, bool) {
	if typ != "message_start" {
		return "", false
	}
	var top struct {
		Message *struct {
			Model json.RawMessage `json:"model"`
		} `json:"message"`
	}
	if json.Unmarshal(data, &top) != nil || top.Message == nil {
		return "", false
	}
	var m string
	if json.Unmarshal(top.Message.Model, &m) != nil || len(m) > MaxModelLen {
		return "", false
	}
	return m, true
}

func referenceUsage(typ string, data []byte) (refUsage, bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil, false
	}
	obj := top
	if typ == "message_start" {
		var msg map[string]json.RawMessage
		if json.Unmarshal(top["message"], &msg) != nil || msg == nil {
			return nil, false
		}
		obj = msg
	}
	var u map[string]json.RawMessage
	if json.Unmarshal(obj["usage"], &u) != nil || u == nil {
		return nil, false
	}
	return u, true
}

func refInt(raw json.RawMessage, dst *int64) {
	var n json.Number
	// json.Number also accepts a quoted number; the API's counts are bare.
	if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
		return
	}
	if v, err := strconv.ParseInt(string(n), 10, 64); err == nil && v >= 0 && raw[0] != '-' {
		*dst = v
	}
}

func (u refUsage) mergeInto(c *counts) {
	refInt(u["input_tokens"], &c.input)
	refInt(u["output_tokens"], &c.output)
	refInt(u["cache_read_input_tokens"], &c.cacheRead)
	refInt(u["cache_creation_input_tokens"], &c.cacheCreate)
	var cc map[string]json.RawMessage
	if raw, ok := u["cache_creation"]; ok && json.Unmarshal(raw, &cc) == nil && cc != nil {
		c.split = true
		refInt(cc["ephemeral_5m_input_tokens"], &c.eph5m)
		refInt(cc["ephemeral_1h_input_tokens"], &c.eph1h)
	}
}

func FuzzSSEScanner(f *testing.F) {
	for _, name := range []string{"stream-tool-use.sse", "stream-legacy-crlf.sse", "stream-overloaded.sse"} {
		f.Add(readFile(f, "testdata/"+name), uint64(1))
	}
	f.Add([]byte("data: {\"usage\":{\"output_tokens\":4}}\nevent: message_delta\n\n"), uint64(2))
	f.Add([]byte("event: message_delta\r\ndata: {\"usage\":{\"output_tokens\":4,\"cache_creation\":{\"ephemeral_1h_input_tokens\":3}}}\r\r\n"), uint64(3))
	f.Add([]byte("event: ping\ndata: x\nevent: message_start\ndata: {\"message\":{\"usage\":{}}}\n\n"), uint64(4))
	f.Add([]byte(":\n\nevent\ndata\n\nevent:message_stop\ndata\n\n"), uint64(5))
	f.Add([]byte("event: content_block_start\ndata: {\"content_block\":{\"type\":\"tool_use\",\"name\":\"Task\"}}\n\n"), uint64(6))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		want := reference(stream)
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		for _, size := range []int{len(stream) + 1, 1, 0} {
			if got := scanChunks(split(stream, size, rng)); got != want {
				t.Fatalf("chunk size %d: scanner %+v, reference %+v", size, got, want)
			}
		}
	})
}

// benchStream builds a realistic answer: message_start, n text deltas with
// pings, message_delta and message_stop.
func benchStream(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-opus-5-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":6,"cache_creation_input_tokens":11832,"cache_read_input_tokens":14217,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":11832},"output_tokens":2,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

`)
	for i := range n {
		if i%50 == 0 {
			b.WriteString("event: ping\ndata: {\"type\": \"ping\"}\n\n")
		}
		fmt.Fprintf(&b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"token %d of a reasonably long answer, \"}}\n\n", i)
	}
	b.WriteString(`event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":6,"cache_creation_input_tokens":11832,"cache_read_input_tokens":14217,"output_tokens":1500}}

event: message_stop
data: {"type":"message_stop"}

`)
	return b.Bytes()
}

// BenchmarkSSEScanner feeds a 1,000-delta answer (~150 KB) in the chunk
// sizes an upstream produces: one event per chunk is typical of a model
// trickling tokens, 16 KiB of a fast one.
func BenchmarkSSEScanner(b *testing.B) {
	stream := benchStream(1000)
	for _, size := range []int{128, 1024, 16 << 10} {
		chunks := split(stream, size, nil)
		b.Run(fmt.Sprintf("chunk=%d", size), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			var s SSEScanner
			for b.Loop() {
				s.Reset()
				for _, c := range chunks {
					s.Write(c)
				}
				if s.Usage().OutputTokens != 1500 {
					b.Fatal("usage not found")
				}
			}
		})
	}
}
