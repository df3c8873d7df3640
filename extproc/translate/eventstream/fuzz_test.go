package eventstream

import (
	"bytes"
	"testing"
	"time"

	sdk "github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
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
