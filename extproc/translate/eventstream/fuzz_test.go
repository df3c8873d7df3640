package eventstream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
)

func addSeeds(f *testing.F) {
	capture := readCapture(f)
	f.Add(capture)
	f.Add(capture[:648])
	f.Add(capture[:100])
	f.Add(exceptionFrame(f, "throttlingException", `{"message":"x"}`))
	f.Add(encode(f, sdk.Headers{
		{Name: "b", Value: sdk.BoolValue(true)}, {Name: "f", Value: sdk.BoolValue(false)},
		{Name: "i8", Value: sdk.Int8Value(-1)}, {Name: "i16", Value: sdk.Int16Value(2)},
		{Name: "i32", Value: sdk.Int32Value(3)}, {Name: "i64", Value: sdk.Int64Value(4)},
		{Name: "by", Value: sdk.BytesValue{1, 2}}, {Name: "ts", Value: sdk.TimestampValue(time.UnixMilli(5))},
		{Name: "u", Value: sdk.UUIDValue{1, 2, 3}}, {Name: ":message-type", Value: sdk.StringValue("event")},
		{Name: ":event-type", Value: sdk.StringValue("chunk")},
	}, []byte(`{"bytes":"`+b64(`{"type":"ping"}`)+`"}`)))
}

// FuzzDifferential checks the hand-written frame parser against the
// aws-sdk-go-v2 decoder on the first frame of the input: a frame accepted
// by one is accepted by the other, with the same headers and payload.
func FuzzDifferential(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		mine, mineOK := parseOne(in)
		msg, err := sdk.NewDecoder().Decode(bytes.NewReader(in), nil)
		sdkOK := err == nil
		if mineOK != sdkOK {
			t.Fatalf("accepted: ours %v, SDK %v (%v)", mineOK, sdkOK, err)
		}
		if !mineOK {
			return
		}
		if !bytes.Equal(mine.payload, msg.Payload) {
			t.Fatalf("payload: ours %q, SDK %q", mine.payload, msg.Payload)
		}
		// The SDK keeps the last of duplicate names.
		want := map[string][]byte{}
		for _, h := range msg.Headers {
			var buf bytes.Buffer
			if err := sdk.EncodeHeaders(&buf, sdk.Headers{h}); err != nil {
				// The SDK decodes string/bytes values up to 64 KiB but only
				// encodes up to 32 KiB; nothing to compare against.
				return
			}
			want[h.Name] = buf.Bytes()
		}
		got := map[string][]byte{}
		for h := mine.headers; len(h) > 0; {
			name, _, _, rest, err := nextHeader(h)
			if err != nil {
				t.Fatal(err)
			}
			got[string(name)] = h[:len(h)-len(rest)]
			h = rest
		}
		if len(got) != len(want) {
			t.Fatalf("headers: ours %d, SDK %d", len(got), len(want))
		}
		for name, raw := range got {
			w := want[name]
			if raw[1+len(name)] == typeTimestamp {
				// The SDK round-trips timestamps through time.Time, which
				// cannot hold every int64 millisecond count.
				continue
			}
			if !bytes.Equal(raw, w) {
				t.Fatalf("header %q: ours %x, SDK %x", name, raw, w)
			}
		}
	})
}

type parsed struct{ headers, payload []byte }

// parseOne parses the first frame of in with this package's parser.
func parseOne(in []byte) (parsed, bool) {
	if len(in) < preludeLen {
		return parsed{}, false
	}
	total, err := checkPrelude(in)
	if err != nil || len(in) < total {
		return parsed{}, false
	}
	h, p, err := splitFrame(in[:total])
	if err != nil {
		return parsed{}, false
	}
	for rest := h; len(rest) > 0; {
		if _, _, _, rest, err = nextHeader(rest); err != nil {
			return parsed{}, false
		}
	}
	return parsed{h, p}, true
}

// FuzzConverter feeds arbitrary input, whole and split, and checks that the
// converter never panics, that splitting does not change the output, and
// that a stream ends with at most one error event.
func FuzzConverter(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, c, _ := convert([][]byte{in})
		if !c.Done() {
			t.Fatal("not Done after Finish")
		}
		split, _, _ := convert(splits(in, uint64(len(in))))
		if !bytes.Equal(whole, split) {
			t.Fatalf("split output differs:\n%q\n%q", whole, split)
		}
		if n := bytes.Count(whole, []byte("event: error\n")); n > 1 {
			t.Fatalf("%d error events", n)
		}
	})
}

// fuzzHeaders builds up to 16 headers of every value type from spec, so
// that the fuzzer explores valid frames (a mutated frame almost never
// passes both CRCs).
func fuzzHeaders(spec []byte) sdk.Headers {
	take := func(n int) []byte {
		n = min(n, len(spec))
		b := spec[:n]
		spec = spec[n:]
		return b
	}
	be := func(n int) uint64 {
		var v uint64
		for _, c := range take(n) {
			v = v<<8 | uint64(c)
		}
		return v
	}
	var hs sdk.Headers
	for len(spec) >= 2 && len(hs) < 16 {
		typ := spec[0] % 10
		nameLen := int(spec[1])%24 + 1
		spec = spec[2:]
		name := string(take(nameLen))
		var v sdk.Value
		switch typ {
		case typeTrue:
			v = sdk.BoolValue(true)
		case typeFalse:
			v = sdk.BoolValue(false)
		case typeByte:
			v = sdk.Int8Value(int8(be(1)))
		case typeShort:
			v = sdk.Int16Value(int16(be(2)))
		case typeInt:
			v = sdk.Int32Value(int32(be(4)))
		case typeLong:
			v = sdk.Int64Value(int64(be(8)))
		case typeBytes:
			v = sdk.BytesValue(append([]byte(nil), take(int(be(1)))...))
		case typeString:
			v = sdk.StringValue(string(take(int(be(1)))))
		case typeTimestamp:
			// Milliseconds within ±2^40 (some 35 years): time.Time holds
			// them exactly.
			v = sdk.TimestampValue(time.UnixMilli(int64(be(5)) - 1<<39))
		case typeUUID:
			var u sdk.UUIDValue
			copy(u[:], take(16))
			v = u
		}
		hs = append(hs, sdk.Header{Name: name, Value: v})
	}
	return hs
}

// FuzzRoundTrip encodes a frame with the aws-sdk-go-v2 encoder and checks
// that this package's parser returns exactly its headers, in order and
// with duplicates, and its payload; and that the converter reads it the
// same way split anywhere.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{typeString, 12, ':', 'm', 'e', 's', 's', 'a', 'g', 'e', '-', 't', 'y', 'p', 'e', 5, 'e', 'v', 'e', 'n', 't'}, []byte(`{"bytes":"`+b64(`{"type":"ping"}`)+`"}`))
	f.Add([]byte("\x00\x01a\x01\x01b\x02\x02cc\x80\x03\x03ddd\x80\x00\x04\x04eeee\x7f\xff\xff\xff\x05\x05fffff\x80\x00\x00\x00\x00\x00\x00\x00"+
		"\x06\x01g\x03xyz\x07\x01h\x00\x08\x01i\x12\x34\x56\x78\x9a\x09\x01j0123456789abcdef\x07\x01h\x02hh"), []byte{})
	f.Add([]byte{typeBytes, 0, 'x', 255}, bytes.Repeat([]byte{0xff}, 300))
	f.Fuzz(func(t *testing.T, spec, payload []byte) {
		hs := fuzzHeaders(spec)
		var frame bytes.Buffer
		if err := sdk.NewEncoder().Encode(&frame, sdk.Message{Headers: hs, Payload: payload}); err != nil {
			return // beyond what the SDK encodes (e.g. a name over 255 bytes)
		}
		got, ok := parseOne(frame.Bytes())
		if !ok {
			t.Fatalf("a frame the SDK encoded was rejected: % x", frame.Bytes())
		}
		if !bytes.Equal(got.payload, payload) {
			t.Fatalf("payload %q, want %q", got.payload, payload)
		}
		rest := got.headers
		for i, h := range hs {
			name, typ, value, next, err := nextHeader(rest)
			if err != nil {
				t.Fatalf("header %d: %v", i, err)
			}
			raw := rest[:len(rest)-len(next)]
			rest = next
			var want bytes.Buffer
			if err := sdk.EncodeHeaders(&want, sdk.Headers{h}); err != nil {
				t.Fatal(err)
			}
			// The SDK's encoding: name length, name, type, value.
			wantType := want.Bytes()[1+len(h.Name)]
			if string(name) != h.Name || typ != wantType || !bytes.Equal(raw, want.Bytes()) {
				t.Fatalf("header %d: %q type %d raw % x, want %q type %d raw % x", i, name, typ, raw, h.Name, wantType, want.Bytes())
			}
			var wantValue []byte
			switch v := h.Value.(type) {
			case sdk.StringValue:
				wantValue = []byte(v)
			case sdk.BytesValue:
				wantValue = v
			default:
				// Fixed-size values: the encoding after the type byte.
				wantValue = want.Bytes()[2+len(h.Name):]
			}
			if !bytes.Equal(value, wantValue) {
				t.Fatalf("header %q value % x, want % x", name, value, wantValue)
			}
		}
		if len(rest) != 0 {
			t.Fatalf("%d header bytes left after the %d headers", len(rest), len(hs))
		}
		// The converter's chunking must not change how it reads the frame.
		whole, _, _ := convert([][]byte{frame.Bytes()})
		for _, seed := range []uint64{1, 2} {
			if split, _, _ := convert(splits(frame.Bytes(), seed)); !bytes.Equal(split, whole) {
				t.Fatalf("split output differs:\n%q\n%q", whole, split)
			}
		}
	})
}

// chunkFrame is a Bedrock chunk frame carrying event.
func chunkFrame(t testing.TB, event []byte) []byte {
	return encode(t, sdk.Headers{
		{Name: ":event-type", Value: sdk.StringValue("chunk")},
		{Name: ":content-type", Value: sdk.StringValue("application/json")},
		{Name: ":message-type", Value: sdk.StringValue("event")},
	}, []byte(`{"bytes":"`+base64.StdEncoding.EncodeToString(event)+`"}`))
}

// jsonMember is one member of a JSON object as encoding/json reads it.
type jsonMember struct {
	key      string // decoded
	raw, val []byte // raw (quoted) key and raw value
}

// objectMembers lists the members of the JSON object b with encoding/json;
// ok is false if b is not one JSON object.
func objectMembers(b []byte) (ms []jsonMember, ok bool) {
	if !json.Valid(b) || !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	for dec.More() {
		before := dec.InputOffset() // the end of the previous token
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		raw := bytes.TrimLeft(b[before:dec.InputOffset()], " \t\r\n,")
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		ms = append(ms, jsonMember{k.(string), raw, v})
	}
	return ms, true
}

// nesting returns the nesting depth of the valid JSON value b.
func nesting(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, level := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return depth
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			level++
			depth = max(depth, level)
		case json.Delim('}'), json.Delim(']'):
			level--
		}
	}
}

// FuzzConverterChunk sends one chunk event, then message_stop, in valid
// frames, and checks the SSE against encoding/json's reading of the
// event: an object with a plain "type" string (its last one) is forwarded
// as "event: <type>" with the event's bytes as data (line breaks, which
// can only be white space there, turned into spaces so that the data
// stays one SSE line), minus the invocation metrics member; anything else
// ends the stream with exactly one error event, whatever the chunking.
func FuzzConverterChunk(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`, ` {"type" : "content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9"}} `,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15},"amazon-bedrock-invocationMetrics":{"inputTokenCount":10}}`,
		`{"amazon-bedrock-invocationMetrics":{},"type":"message_stop","x":[1,{"y":null}]}`,
		`{"type":"a","type":"b"}`, `{"type":"\u0061"}`, `{"type":""}`, `{"type":1}`, `{"typ\u0065":"x"}`, `{}`, `[]`, `{"type":"x"`, `"x"`,
		`{"type":"x","n":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`,
		`{"type":"x","n":` + strings.Repeat("[", jsonscan.MaxDepth-1) + strings.Repeat("]", jsonscan.MaxDepth-1) + `}`,
		`{"type":"x","n":` + strings.Repeat("[", jsonscan.MaxDepth) + strings.Repeat("]", jsonscan.MaxDepth) + `}`,
		"{\"type\":\"x\",\r\n\"a\":[1,\n2]}\n",
	} {
		f.Add([]byte(s), uint64(1))
	}
	stop := []byte(`{"type":"message_stop"}`)
	const stopEvent = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	f.Fuzz(func(t *testing.T, ev []byte, seed uint64) {
		stream := append(chunkFrame(t, ev), chunkFrame(t, stop)...)
		got, c, err := convert([][]byte{stream})
		if split, _, _ := convert(splits(stream, seed)); !bytes.Equal(split, got) {
			t.Fatalf("split output differs:\n%q\n%q", got, split)
		}
		ms, ok := objectMembers(ev)
		var typ []byte
		metrics, escapedKey := 0, false
		for _, m := range ms {
			escapedKey = escapedKey || bytes.IndexByte(m.raw, '\\') >= 0
			switch m.key {
			case "type":
				typ = m.val
			case metricsKey:
				metrics++
			}
		}
		if escapedKey {
			// The converter matches raw key bytes; encoding/json decodes
			// escapes. Bedrock never escapes keys: no reference here.
			return
		}
		plainType := len(typ) > 2 && typ[0] == '"' && bytes.IndexByte(typ, '\\') < 0
		if !ok || !plainType || nesting(ev) > jsonscan.MaxDepth {
			const prefix = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
			if !errors.Is(err, ErrCorrupt) || !bytes.HasPrefix(got, []byte(prefix)) || !bytes.HasSuffix(got, []byte("}}\n\n")) ||
				bytes.Count(got, []byte("\n\n")) != 1 {
				t.Fatalf("event %q (object %v, plain type %v): got %q, %v; want one corrupt-stream error event", ev, ok, plainType, got, err)
			}
			return
		}
		if err != nil || c.Err() != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		head := "event: " + string(typ[1:len(typ)-1]) + "\ndata: "
		body, found := bytes.CutPrefix(got, []byte(head))
		data, found2 := bytes.CutSuffix(body, []byte("\n\n"+stopEvent))
		if !found || !found2 {
			t.Fatalf("event %q: got %q, want %q<data>\\n\\n%q", ev, got, head, stopEvent)
		}
		if bytes.ContainsAny(data, "\r\n") {
			t.Fatalf("data %q spans several SSE lines", data)
		}
		oneLine := slices.Clone(ev)
		for i, ch := range oneLine {
			if ch == '\r' || ch == '\n' {
				oneLine[i] = ' '
			}
		}
		switch metrics {
		case 0:
			if !bytes.Equal(data, oneLine) {
				t.Fatalf("data %q, want the event's bytes %q", data, oneLine)
			}
		case 1:
			// The metrics member is cut; every other member is kept as is.
			out, ok := objectMembers(data)
			want, _ := objectMembers(oneLine)
			want = slices.DeleteFunc(want, func(m jsonMember) bool { return m.key == metricsKey })
			if !ok || !slices.EqualFunc(out, want, func(a, b jsonMember) bool {
				return bytes.Equal(a.raw, b.raw) && bytes.Equal(a.val, b.val)
			}) {
				t.Fatalf("data %q: want the members of %q but the metrics", data, ev)
			}
		}
	})
}
