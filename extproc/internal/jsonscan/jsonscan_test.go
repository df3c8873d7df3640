package jsonscan

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

const turn1 = "../../../testdata/claude-code-2.1.332/anthropic-turn1.body.json"

type member struct{ key, value string }

func members(t testing.TB, b []byte) ([]member, error) {
	t.Helper()
	var out []member
	it := Object(b)
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		out = append(out, member{string(k), string(v)})
	}
	return out, it.Err()
}

func TestObject(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []member
		wantErr bool
	}{
		{"empty", `{}`, nil, false},
		{"whitespace", " \t\r\n{ \n} trailing", nil, false},
		{"scalars", `{"a":1,"b":"x","c":true,"d":null,"e":-1.5e3}`,
			[]member{{`"a"`, `1`}, {`"b"`, `"x"`}, {`"c"`, `true`}, {`"d"`, `null`}, {`"e"`, `-1.5e3`}}, false},
		{"nested", `{"m":{"x":[1,{"y":"}"}],"z":"]"} , "s" : "a\"b\\" }`,
			[]member{{`"m"`, `{"x":[1,{"y":"}"}],"z":"]"}`}, {`"s"`, `"a\"b\\"`}}, false},
		{"escaped key", `{"mod\u0065l":"x"}`, []member{{`"mod\u0065l"`, `"x"`}}, false},
		{"not an object", `[1]`, nil, true},
		{"empty input", ``, nil, true},
		{"unterminated string", `{"a":"x`, nil, true},
		{"missing colon", `{"a" 1}`, nil, true},
		{"trailing comma", `{"a":1,}`, []member{{`"a"`, `1`}}, true},
		{"unterminated object", `{"a":{"b":1}`, []member{{`"a"`, `{"b":1}`}}, true},
		{"missing value", `{"a":}`, nil, true},
		{"garbage after member", `{"a":1 x}`, []member{{`"a"`, `1`}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := members(t, []byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("members = %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("member %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestScalars(t *testing.T) {
	strs := []struct {
		raw  string
		want string
		ok   bool
	}{
		{`"abc"`, "abc", true},
		{`"a\nb"`, "a\nb", true},
		{`"\u00e9"`, "é", true},
		{"\"\xff\"", "\ufffd", true},
		{`"x`, "", false},
		{`1`, "", false},
	}
	for _, tt := range strs {
		got, ok := String([]byte(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("String(%q) = %q, %v; want %q, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
	uints := []struct {
		raw  string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"12345", 12345, true}, {"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false}, {"-1", 0, false}, {"1.0", 0, false}, {"1e3", 0, false},
		{"01", 0, false}, {"null", 0, false}, {"", 0, false}, {`"1"`, 0, false},
	}
	for _, tt := range uints {
		got, ok := Uint([]byte(tt.raw))
		if got != tt.want || ok != tt.ok {
			t.Errorf("Uint(%q) = %d, %v; want %d, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
	if !KeyIs([]byte(`"mod\u0065l"`), "model") || KeyIs([]byte(`"Model"`), "model") || KeyIs([]byte(`"`), "") {
		t.Error("KeyIs mismatch")
	}
	if v, ok := Find([]byte(`{"a":1,"b":2,"a":3}`), "a"); !ok || string(v) != "3" {
		t.Errorf("Find duplicate = %q, %v; want 3 (last wins)", v, ok)
	}
}

// oracle lists the top-level members of b with encoding/json's Decoder,
// keys decoded and values raw. ok is false when b is not a valid object.
func oracle(b []byte) (keys []string, values []string, ok bool) {
	if !json.Valid(b) {
		return nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, false
		}
		keys = append(keys, k.(string))
		values = append(values, string(raw))
	}
	return keys, values, true
}

func FuzzObject(f *testing.F) {
	f.Add([]byte(`{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi \"there\""}]}`))
	f.Add([]byte(`{"a\u0062":{"x":[1,2,{"y":null}]},"n":-0.5e-3,"s":"\\\\"}`))
	f.Add([]byte(`  {"usage":{"input_tokens":10,"cache_creation":{"ephemeral_5m_input_tokens":3}}}  `))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`{"a":"\ud83d\ude00","b":"\xff"}`))
	f.Add([]byte(`{"a":[}`))
	if body, err := os.ReadFile(turn1); err == nil {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var gotKeys, gotValues []string
		it := Object(b)
		for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
			ks, kok := String(k)
			if !kok {
				ks = "\x00invalid key " + string(k)
			}
			gotKeys = append(gotKeys, ks)
			gotValues = append(gotValues, string(v))
			for _, name := range []string{"model", "stream", "usage"} {
				if want := ks == name; KeyIs(k, name) != want {
					t.Fatalf("KeyIs(%q, %q) = %v, want %v", k, name, !want, want)
				}
			}
			if want, err := strconv.ParseInt(string(v), 10, 64); err == nil && want >= 0 && json.Valid(b) {
				if got, ok := Uint(v); !ok || got != want {
					t.Fatalf("Uint(%q) = %d, %v; want %d", v, got, ok, want)
				}
			}
		}
		keys, values, ok := oracle(b)
		if !ok {
			return // invalid input: only "no panic" is required.
		}
		if it.Err() != nil {
			t.Fatalf("valid object %q: Err = %v", b, it.Err())
		}
		if len(keys) != len(gotKeys) {
			t.Fatalf("%q: keys %q, oracle %q", b, gotKeys, keys)
		}
		for i := range keys {
			if keys[i] != gotKeys[i] || values[i] != gotValues[i] {
				t.Fatalf("%q member %d: got %q=%q, oracle %q=%q", b, i, gotKeys[i], gotValues[i], keys[i], values[i])
			}
			var s string
			if values[i][0] == '"' && json.Unmarshal([]byte(values[i]), &s) == nil {
				if got, ok := String([]byte(values[i])); !ok || got != s {
					t.Fatalf("String(%q) = %q, %v; want %q", values[i], got, ok, s)
				}
			}
		}
	})
}

func BenchmarkObject48KB(b *testing.B) {
	body, err := os.ReadFile(turn1)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Find(body, "stream"); !ok {
			b.Fatal("stream not found")
		}
	}
}

func BenchmarkUnmarshal48KB(b *testing.B) {
	body, err := os.ReadFile(turn1)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}
