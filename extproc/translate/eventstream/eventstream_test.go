package eventstream

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"testing"

	sdk "github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

var update = flag.Bool("update", false, "rewrite golden files")

const capturePath = "../../../testdata/bedrock-invoke-stream-capture.bin"

func readCapture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(capturePath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// convert feeds chunks to a new Converter and finishes it.
func convert(chunks [][]byte) ([]byte, *Converter, error) {
	c := NewConverter()
	var out []byte
	var firstErr error
	for _, ch := range chunks {
		var err error
		out, err = c.Write(out, ch)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	out, err := c.Finish(out)
	if err != nil && firstErr == nil {
		firstErr = err
	}
	return out, c, firstErr
}

func splits(b []byte, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	var chunks [][]byte
	for len(b) > 0 {
		n := min(1+r.IntN(400), len(b))
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	return chunks
}

func TestCapture(t *testing.T) {
	capture := readCapture(t)
	golden := "testdata/capture.sse"
	whole, c, err := convert([][]byte{capture})
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(golden, whole, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Usage(), (Usage{InputTokens: 10, OutputTokens: 15}); got != want {
		t.Errorf("usage = %+v, want %+v", got, want)
	}

	bytewise := make([][]byte, len(capture))
	for i := range capture {
		bytewise[i] = capture[i : i+1]
	}
	cases := map[string][][]byte{
		"whole":    {capture},
		"bytewise": bytewise,
		"seed1":    splits(capture, 1),
		"seed2":    splits(capture, 2),
		"seed3":    splits(capture, 3),
		"seed42":   splits(capture, 42),
	}
	for name, chunks := range cases {
		t.Run(name, func(t *testing.T) {
			got, c, err := convert(chunks)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("SSE differs from %s:\n%s", golden, got)
			}
			if !c.Done() {
				t.Error("not Done after Finish")
			}
			if got, want := c.Usage(), (Usage{InputTokens: 10, OutputTokens: 15}); got != want {
				t.Errorf("usage = %+v, want %+v", got, want)
			}
		})
	}
}

func encode(t testing.TB, headers sdk.Headers, payload []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := sdk.NewEncoder().Encode(&buf, sdk.Message{Headers: headers, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func exceptionFrame(t testing.TB, typ, payload string) []byte {
	return encode(t, sdk.Headers{
		{Name: ":message-type", Value: sdk.StringValue("exception")},
		{Name: ":exception-type", Value: sdk.StringValue(typ)},
		{Name: ":content-type", Value: sdk.StringValue("application/json")},
	}, []byte(payload))
}

func TestUpstreamErrors(t *testing.T) {
	capture := readCapture(t)
	first := capture[:648] // message_start
	wantStart := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5-20250929\",\"id\":\"msg_bdrk_012GBPzpcoMCLP1b2pcJsSHk\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1}}}\n\n"
	tests := []struct {
		name      string
		frame     []byte
		want      string
		errorType string
	}{
		{"throttling", exceptionFrame(t, "throttlingException", `{"message":"Too many requests, please wait before trying again."}`),
			`{"type":"error","error":{"type":"rate_limit_error","message":"Too many requests, please wait before trying again."}}`, "rate_limit_error"},
		{"validation", exceptionFrame(t, "validationException", `{"message":"prompt is too long: 210000 tokens > 200000 maximum"}`),
			`{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}`, "invalid_request_error"},
		{"service unavailable", exceptionFrame(t, "serviceUnavailableException", `{"message":"Service unavailable \"now\""}`),
			`{"type":"error","error":{"type":"overloaded_error","message":"Service unavailable \"now\""}}`, "overloaded_error"},
		{"model timeout", exceptionFrame(t, "modelTimeoutException", `{"message":"Model has timed out"}`),
			`{"type":"error","error":{"type":"timeout_error","message":"Model has timed out"}}`, "timeout_error"},
		{"model stream error", exceptionFrame(t, "modelStreamErrorException", `{"message":"boom"}`),
			`{"type":"error","error":{"type":"api_error","message":"boom"}}`, "api_error"},
		{"internal server", exceptionFrame(t, "internalServerException", `{"message":"oops"}`),
			`{"type":"error","error":{"type":"api_error","message":"oops"}}`, "api_error"},
		{"exception without message", exceptionFrame(t, "throttlingException", `not json`),
			`{"type":"error","error":{"type":"rate_limit_error","message":"Bedrock throttlingException"}}`, "rate_limit_error"},
		{"error frame", encode(t, sdk.Headers{
			{Name: ":message-type", Value: sdk.StringValue("error")},
			{Name: ":error-code", Value: sdk.StringValue("InternalFailure")},
			{Name: ":error-message", Value: sdk.StringValue("line1\nline2 \"q\"")},
		}, nil), `{"type":"error","error":{"type":"api_error","message":"line1\nline2 \"q\""}}`, "api_error"},
		{"error frame throttling", encode(t, sdk.Headers{
			{Name: ":message-type", Value: sdk.StringValue("error")},
			{Name: ":error-code", Value: sdk.StringValue("ThrottlingException")},
			{Name: ":error-message", Value: sdk.StringValue("slow down")},
		}, nil), `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`, "rate_limit_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(append(append([]byte{}, first...), tt.frame...), capture[648:]...)
			got, c, err := convert([][]byte{in})
			want := wantStart + "event: error\ndata: " + tt.want + "\n\n"
			if string(got) != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) || ue.ErrorType != tt.errorType {
				t.Errorf("err = %v, want UpstreamError %s", err, tt.errorType)
			}
			if !c.Done() || c.Err() != err {
				t.Errorf("Done = %v, Err = %v", c.Done(), c.Err())
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	capture := readCapture(t)
	first := capture[:648]
	flip := func(i int) []byte {
		b := bytes.Clone(capture)
		b[i] ^= 0x01
		return b
	}
	chunkFrame := func(payload string) []byte {
		return encode(t, sdk.Headers{
			{Name: ":event-type", Value: sdk.StringValue("chunk")},
			{Name: ":message-type", Value: sdk.StringValue("event")},
		}, []byte(payload))
	}
	const pre = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Bedrock response stream could not be read: "
	const post = "\"}}\n\n"
	bigLen := bytes.Clone(capture)
	bigLen[0] = 0x7f // total length > MaxFrameLen, CRC recomputed below
	tests := []struct {
		name   string
		in     []byte
		prefix int // bytes of capture before the corruption whose SSE precedes the error
		msg    string
		is     error
	}{
		{"prelude length byte", flip(1), 0, "eventstream: corrupt Bedrock event stream: prelude CRC mismatch", ErrCorrupt},
		{"prelude crc", flip(648 + 9), 648, "eventstream: corrupt Bedrock event stream: prelude CRC mismatch", ErrCorrupt},
		{"payload", flip(648 + 100), 648, "eventstream: corrupt Bedrock event stream: message CRC mismatch", ErrCorrupt},
		{"message crc", flip(647), 0, "eventstream: corrupt Bedrock event stream: message CRC mismatch", ErrCorrupt},
		{"truncated", capture[:len(capture)-5], 2999 - 316, "eventstream: Bedrock event stream ended early: 311 bytes of an incomplete frame", ErrTruncated},
		{"truncated prelude", capture[:648+5], 648, "eventstream: Bedrock event stream ended early: 5 bytes of an incomplete frame", ErrTruncated},
		{"no message_stop", capture[:648], 648, "eventstream: Bedrock event stream ended early: no message_stop", ErrTruncated},
		{"too long", withPrelude(bigLen, 0x7f000000, 75), 0, "eventstream: corrupt Bedrock event stream: frame length 2130706432 outside [16, 16777216]", ErrCorrupt},
		{"headers longer than frame", withPrelude(bytes.Clone(capture), 648, 640), 0, "eventstream: corrupt Bedrock event stream: headers length 640 exceeds frame length 648", ErrCorrupt},
		{"bad base64", append(bytes.Clone(first), chunkFrame(`{"bytes":"!!!!"}`)...), 648, "eventstream: corrupt Bedrock event stream: chunk bytes are not base64: illegal base64 data at input byte 0", ErrCorrupt},
		{"bad event json", append(bytes.Clone(first), chunkFrame(`{"bytes":"eyJ0eXBlIjo="}`)...), 648, "eventstream: corrupt Bedrock event stream: chunk event is not a JSON object", ErrCorrupt},
		{"bad payload json", append(bytes.Clone(first), chunkFrame(`{"bytes":`)...), 648, "eventstream: corrupt Bedrock event stream: chunk payload is not a JSON object", ErrCorrupt},
		{"unknown message type", append(bytes.Clone(first), encode(t, sdk.Headers{{Name: ":message-type", Value: sdk.StringValue("weird")}}, nil)...), 648, `eventstream: corrupt Bedrock event stream: unexpected :message-type \"weird\"`, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantPrefix, _, _ := convert([][]byte{capture[:tt.prefix]})
			if tt.prefix == 0 {
				wantPrefix = nil
			} else {
				// convert's Finish appended a "no message_stop" error; drop it.
				wantPrefix = wantPrefix[:bytes.LastIndex(wantPrefix, []byte("event: error"))]
			}
			want := string(wantPrefix) + pre + tt.msg + post
			for _, chunks := range [][][]byte{{tt.in}, splits(tt.in, 7)} {
				got, c, err := convert(chunks)
				if string(got) != want {
					t.Errorf("got\n%s\nwant\n%s", got, want)
				}
				if !errors.Is(err, tt.is) || !c.Done() {
					t.Errorf("err = %v, Done = %v", err, c.Done())
				}
				// Further input is ignored.
				if out, err := c.Write(nil, capture); len(out) != 0 || err != nil {
					t.Errorf("after end: %q, %v", out, err)
				}
			}
		})
	}
}

// withPrelude rewrites the prelude of the first frame in b with a valid CRC.
func withPrelude(b []byte, total, hlen uint32) []byte {
	putBE32(b[0:], total)
	putBE32(b[4:], hlen)
	putBE32(b[8:], crcIEEE(b[:8]))
	return b
}

func TestInvocationMetricsCut(t *testing.T) {
	tests := []struct{ event, want string }{
		{`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1}}`, `{"type":"message_stop"}`},
		{`{"amazon-bedrock-invocationMetrics":{"inputTokenCount":1}, "type":"message_stop"}`, `{"type":"message_stop"}`},
		{`{"type":"message_stop" , "amazon-bedrock-invocationMetrics" : {} ,"x":1}`, `{"type":"message_stop" ,"x":1}`},
		{`{"type":"message_stop"}`, `{"type":"message_stop"}`},
	}
	for _, tt := range tests {
		t.Run(tt.event, func(t *testing.T) {
			c := NewConverter()
			f := encode(t, sdk.Headers{
				{Name: ":event-type", Value: sdk.StringValue("chunk")},
				{Name: ":message-type", Value: sdk.StringValue("event")},
			}, []byte(`{"bytes":"`+b64(tt.event)+`","p":"abc"}`))
			got, err := c.Write(nil, f)
			if err != nil {
				t.Fatal(err)
			}
			if want := "event: message_stop\ndata: " + tt.want + "\n\n"; string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestUsageFallbackAndCache(t *testing.T) {
	ev := func(s string) []byte {
		return encode(t, sdk.Headers{
			{Name: ":event-type", Value: sdk.StringValue("chunk")},
			{Name: ":message-type", Value: sdk.StringValue("event")},
		}, []byte(`{"bytes":"`+b64(s)+`"}`))
	}
	tests := []struct {
		name   string
		events []string
		want   Usage
	}{
		{"events", []string{
			`{"type":"message_start","message":{"usage":{"input_tokens":3,"cache_read_input_tokens":100,"cache_creation_input_tokens":7,"output_tokens":1}}}`,
			`{"type":"message_delta","usage":{"output_tokens":42,"cache_read_input_tokens":101}}`,
			`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":99,"outputTokenCount":99,"cacheReadInputTokenCount":99,"cacheWriteInputTokenCount":99}}`,
		}, Usage{InputTokens: 3, OutputTokens: 42, CacheReadInputTokens: 101, CacheCreationInputTokens: 7}},
		{"metrics only", []string{
			`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":5,"outputTokenCount":6,"cacheReadInputTokenCount":7,"cacheWriteInputTokenCount":8}}`,
		}, Usage{InputTokens: 5, OutputTokens: 6, CacheReadInputTokens: 7, CacheCreationInputTokens: 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConverter()
			for _, e := range tt.events {
				if _, err := c.Write(nil, ev(e)); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.Usage(); got != tt.want {
				t.Errorf("usage = %+v, want %+v", got, tt.want)
			}
			c.Reset()
			if got := c.Usage(); got != (Usage{}) || c.Done() {
				t.Errorf("after Reset: %+v, Done %v", got, c.Done())
			}
		})
	}
}

func TestErrorType(t *testing.T) {
	tests := map[string]string{
		"ThrottlingException":                  "rate_limit_error",
		"throttlingException":                  "rate_limit_error",
		"ServiceQuotaExceededException":        "rate_limit_error",
		"ValidationException:http://internal/": "invalid_request_error",
		"serviceUnavailableException":          "overloaded_error",
		"ModelTimeoutException":                "timeout_error",
		"modelStreamErrorException":            "api_error",
		"":                                     "api_error",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := ErrorType(in); got != want {
				t.Errorf("ErrorType(%q) = %q, want %q", in, got, want)
			}
		})
	}
}

func TestZeroAllocSteadyState(t *testing.T) {
	capture := readCapture(t)
	c := NewConverter()
	out := make([]byte, 0, 8192)
	chunks := splits(capture, 9)
	run := func() {
		c.Reset()
		out = out[:0]
		for _, ch := range chunks {
			out, _ = c.Write(out, ch)
		}
		out, _ = c.Finish(out)
	}
	run()
	if n := testing.AllocsPerRun(50, run); n != 0 {
		t.Errorf("allocs per stream = %v, want 0", n)
	}
}

func BenchmarkConvertCapture(b *testing.B) {
	capture := readCapture(b)
	c := NewConverter()
	out := make([]byte, 0, 8192)
	b.SetBytes(int64(len(capture)))
	b.ReportAllocs()
	for b.Loop() {
		c.Reset()
		out, _ = c.Write(out[:0], capture)
		out, _ = c.Finish(out)
	}
}

// BenchmarkSDKDecoder is the aws-sdk-go-v2 decoder alone, for comparison.
func BenchmarkSDKDecoder(b *testing.B) {
	capture := readCapture(b)
	d := sdk.NewDecoder()
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(capture)))
	b.ReportAllocs()
	for b.Loop() {
		r := bytes.NewReader(capture)
		for r.Len() > 0 {
			if _, err := d.Decode(r, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// longStream is a long answer made of the capture's own frames: its
// message_start and content_block_start, its content_block_delta frames
// repeated n times, then its closing frames — what a real multi-thousand-
// token answer looks like on the wire, where per-byte cost dominates.
func longStream(tb testing.TB, n int) []byte {
	tb.Helper()
	capture := readCapture(tb)
	var frames [][]byte
	for rest := capture; len(rest) > 0; {
		size := int(binary.BigEndian.Uint32(rest))
		frames = append(frames, rest[:size])
		rest = rest[size:]
	}
	var deltas, head, tail [][]byte
	d := sdk.NewDecoder()
	for _, f := range frames {
		m, err := d.Decode(bytes.NewReader(f), nil)
		if err != nil {
			tb.Fatal(err)
		}
		var p struct{ Bytes []byte }
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			tb.Fatal(err)
		}
		switch {
		case bytes.Contains(p.Bytes, []byte(`"content_block_delta"`)):
			deltas = append(deltas, f)
		case len(deltas) == 0:
			head = append(head, f)
		default:
			tail = append(tail, f)
		}
	}
	out := bytes.Join(head, nil)
	for range n {
		for _, f := range deltas {
			out = append(out, f...)
		}
	}
	return append(out, bytes.Join(tail, nil)...)
}

// BenchmarkConvertLongStream feeds a ~1 MB answer in 16 KiB chunks.
func BenchmarkConvertLongStream(b *testing.B) {
	stream := longStream(b, 1000)
	chunks := [][]byte{}
	for off := 0; off < len(stream); off += 16 << 10 {
		chunks = append(chunks, stream[off:min(off+16<<10, len(stream))])
	}
	c := NewConverter()
	out := make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		c.Reset()
		for _, ch := range chunks {
			out, _ = c.Write(out[:0], ch)
		}
		out, _ = c.Finish(out[:0])
		if c.Err() != nil {
			b.Fatal(c.Err())
		}
	}
}

func TestBedrockChunkBytes(t *testing.T) {
	tests := []struct {
		payload string
		want    string
		ok      bool
	}{
		{`{"bytes":"QUJD"}`, "QUJD", true},
		{`{"bytes":"QUJD","p":"abcXYZ019"}`, "QUJD", true},
		{`{"bytes":"QUJD","p":""}`, "QUJD", true},
		// Anything else takes the general JSON path.
		{`{"bytes":"QUJD","p":"a-b"}`, "", false},
		{`{"bytes":"QUJD","p":"ab"} `, "", false},
		{`{"bytes":"QUJD","x":"ab"}`, "", false},
		{`{"bytes":"QUJD" }`, "", false},
		{`{ "bytes":"QUJD"}`, "", false},
		{`{"p":"ab","bytes":"QUJD"}`, "", false},
		{`{"bytes":"QUJD`, "", false},
		{`{"bytes":"QU\"JD"}`, "", false},
	}
	for _, tc := range tests {
		got, ok := bedrockChunkBytes([]byte(tc.payload))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("bedrockChunkBytes(%s) = %q, %v; want %q, %v", tc.payload, got, ok, tc.want, tc.ok)
		}
	}
	// Both paths give the same SSE for the same event.
	event := b64(`{"type":"ping"}`)
	var outs []string
	for _, payload := range []string{`{"bytes":"` + event + `","p":"abc"}`, `{ "p" : "abc", "bytes" : "` + event + `" }`} {
		frame := encode(t, sdk.Headers{
			{Name: ":message-type", Value: sdk.StringValue("event")},
			{Name: ":event-type", Value: sdk.StringValue("chunk")},
		}, []byte(payload))
		out, err := NewConverter().Write(nil, frame)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(out))
	}
	if outs[0] != outs[1] || outs[0] != "event: ping\ndata: {\"type\":\"ping\"}\n\n" {
		t.Fatalf("fast and general paths differ: %q vs %q", outs[0], outs[1])
	}
}
