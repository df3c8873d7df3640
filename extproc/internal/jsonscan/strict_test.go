package jsonscan

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

const turn2 = "../../../testdata/claude-code-2.1.332/anthropic-turn2-tool-result.body.json"

// strictMembers lists what a Strict iterator returns, keys and values raw.
func strictMembers(it Strict, b []byte) ([]member, error) {
	var out []member
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		out = append(out, member{string(m.Key(b)), string(m.Value(b))})
	}
	return out, it.Err()
}

func TestStrict(t *testing.T) {
	tests := []struct {
		name  string
		array bool
		in    string
		want  []member
		err   error
	}{
		{"empty object", false, ` { } `, nil, nil},
		{"members", false, "{\"a\" : 1,\r\n\"b\":[true,false,null],\"c\":{\"d\":\"\\u00e9\\n\"},\"e\":-0.5e+3}",
			[]member{{`"a"`, `1`}, {`"b"`, `[true,false,null]`}, {`"c"`, `{"d":"\u00e9\n"}`}, {`"e"`, `-0.5e+3`}}, nil},
		{"escaped key", false, `{"m\u006fdel":"x"}`, []member{{`"m\u006fdel"`, `"x"`}}, nil},
		{"invalid UTF-8 is kept", false, "{\"a\":\"\xff\"}", []member{{`"a"`, "\"\xff\""}}, nil},
		{"duplicate keys, in order", false, `{"a":1,"a":2}`, []member{{`"a"`, `1`}, {`"a"`, `2`}}, nil},
		{"array", true, ` [1, "x" ,{"q":[]}] `, []member{{``, `1`}, {``, `"x"`}, {``, `{"q":[]}`}}, nil},
		{"empty array", true, `[]`, nil, nil},
		{"array is not an object", false, `[1]`, nil, ErrSyntax},
		{"object is not an array", true, `{}`, nil, ErrSyntax},
		{"empty input", false, ``, nil, ErrSyntax},
		{"string", false, `"s"`, nil, ErrSyntax},
		{"unterminated", false, `{"a":1`, nil, ErrSyntax},
		{"trailing comma", false, `{"a":1,}`, []member{{`"a"`, `1`}}, ErrSyntax},
		{"trailing garbage after the object", false, `{"a":1}x`, []member{{`"a"`, `1`}}, ErrSyntax},
		{"trailing garbage after an empty object", false, `{} x`, nil, ErrSyntax},
		{"second object", false, `{"a":1}{}`, []member{{`"a"`, `1`}}, ErrSyntax},
		// A member is returned only with the ',' or '}' after it.
		{"garbage after a member", false, `{"a":1 x}`, nil, ErrSyntax},
		{"missing colon", false, `{"a" 1}`, nil, ErrSyntax},
		{"leading zero", false, `{"a":01}`, nil, ErrSyntax},
		{"control character", false, "{\"a\":\"\x01\"}", nil, ErrSyntax},
		{"bad escape", false, `{"a":"\x"}`, nil, ErrSyntax},
		{"short unicode escape", false, `{"a":"\u00e"}`, nil, ErrSyntax},
		{"bare fraction", false, `{"a":1.}`, nil, ErrSyntax},
		{"bare minus", false, `{"a":-}`, nil, ErrSyntax},
		{"bare exponent", false, `{"a":1e}`, nil, ErrSyntax},
		{"bad literal", false, `{"a":tru}`, nil, ErrSyntax},
		{"nested error", false, `{"a":1,"b":[1 2]}`, []member{{`"a"`, `1`}}, ErrSyntax},
		{"nested key not a string", false, `{"a":{1:2}}`, nil, ErrSyntax},
		{"mismatched brackets", false, `{"a":[}`, nil, ErrSyntax},
		{"array trailing comma", true, `[1,]`, []member{{``, `1`}}, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			it := StrictObject(b)
			if tt.array {
				it = StrictArray(b)
			}
			got, err := strictMembers(it, b)
			if err != tt.err {
				t.Fatalf("err = %v, want %v", err, tt.err)
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

func TestStrictErrBeforeEnd(t *testing.T) {
	b := []byte(`{"a":1,"b":2}`)
	it := StrictObject(b)
	if err := it.Err(); err != ErrSyntax {
		t.Errorf("Err before Next = %v, want ErrSyntax", err)
	}
	if _, ok := it.Next(); !ok {
		t.Fatal("no first member")
	}
	if err := it.Err(); err != ErrSyntax {
		t.Errorf("Err after one member = %v, want ErrSyntax", err)
	}
	for _, ok := it.Next(); ok; _, ok = it.Next() {
	}
	if err := it.Err(); err != nil {
		t.Errorf("Err at the end = %v, want nil", err)
	}
	if _, ok := it.Next(); ok {
		t.Error("Next after the end returned a member")
	}
}

// TestMaxDepth checks the one depth limit: MaxDepth levels pass, one more
// fails with ErrTooDeep, as with encoding/json; skimming has no limit.
func TestMaxDepth(t *testing.T) {
	nest := func(n int) string {
		return strings.Repeat(`[`, n) + strings.Repeat(`]`, n)
	}
	inner := func(n int) string { // n levels inside an object
		return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1)
	}
	tests := []struct {
		name  string
		array bool
		in    string
		err   error
	}{
		{"object, arrays to the limit", false, `{"a":` + nest(MaxDepth-1) + `}`, nil},
		{"object, arrays past the limit", false, `{"a":` + nest(MaxDepth) + `}`, ErrTooDeep},
		{"objects to the limit", false, inner(MaxDepth), nil},
		{"objects past the limit", false, inner(MaxDepth + 1), ErrTooDeep},
		{"array to the limit", true, nest(MaxDepth), nil},
		{"array past the limit", true, nest(MaxDepth + 1), ErrTooDeep},
		// The first problem met wins.
		{"syntax error before the depth", false, `{"a":x,"b":` + nest(MaxDepth) + `}`, ErrSyntax},
		{"depth before a syntax error", false, `{"b":` + nest(MaxDepth) + `,"a":x}`, ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			it := StrictObject(b)
			if tt.array {
				it = StrictArray(b)
			}
			if _, err := strictMembers(it, b); err != tt.err {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
			if want := tt.err == nil; json.Valid(b) != want {
				t.Errorf("json.Valid = %v, want %v: the limit must be encoding/json's", !want, want)
			}
		})
	}
	deep := []byte(`{"a":` + nest(2*MaxDepth) + `,"b":1}`)
	if v, ok := Find(deep, "b"); !ok || string(v) != "1" {
		t.Errorf("skimming past %d levels: Find = %q, %v; want 1", 2*MaxDepth, v, ok)
	}
}

func TestKeyName(t *testing.T) {
	tests := []struct{ raw, want string }{
		{`"model"`, "model"},
		{`""`, ""},
		{`"m\u006fdel"`, "model"},
		{`"a\"b"`, `a"b`},
		{`"é"`, "é"},
		{"\"\xff\"", "\ufffd"},
	}
	for _, tt := range tests {
		if got := KeyName([]byte(tt.raw)); string(got) != tt.want {
			t.Errorf("KeyName(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
	plain := []byte(`"model"`)
	if n := testing.AllocsPerRun(100, func() { KeyName(plain) }); n != 0 {
		t.Errorf("KeyName of a plain name: %v allocations, want 0", n)
	}
}

func strictSeeds(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":-0.5e+3,"b":[true,false,null],"c":{"d":"\u00e9\n"}}`,
		`{"model":"x","stream":true,"messages":[{"role":"user","output_config":{},"content":"hi"}]}`,
		`{"m\u006fdel":1}`, `{"a":01}`, `{"a":1,}`, `{"a" 1}`, `[1]`, `{"a":"\x01"}`, `{"a":1}{}`,
		`{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `{"a":1.}`, `{"a":-}`, `{"a":tru}`, `{"a":[1 2]}`,
		`{"messages":[1,"x",{"q":1}]}`, `{"messages":{}}`,
	} {
		f.Add([]byte(s))
	}
	body, err := os.ReadFile(turn2)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
}

// referenceRawMembers lists the top-level members the way encoding/json
// sees them: decoded key, raw (quoted, possibly escaped) key, raw value.
func referenceRawMembers(b []byte) (keys []string, rawKeys, vals [][]byte, ok bool) {
	if t := bytes.TrimLeft(b, " \t\r\n"); !json.Valid(b) || len(t) == 0 || t[0] != '{' {
		return nil, nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, nil, nil, false
	}
	for dec.More() {
		before := dec.InputOffset() // the end of the previous token
		k, err := dec.Token()
		if err != nil {
			return nil, nil, nil, false
		}
		raw := bytes.TrimLeft(b[before:dec.InputOffset()], " \t\r\n,")
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, nil, false
		}
		keys, rawKeys, vals = append(keys, k.(string)), append(rawKeys, raw), append(vals, v)
	}
	return keys, rawKeys, vals, true
}

// FuzzScanObject checks the validating scan against encoding/json: same
// acceptance, same member keys and raw values, in order.
func FuzzScanObject(f *testing.F) {
	strictSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		members, err := AppendMembers(nil, b)
		keys, rawKeys, vals, ok := referenceRawMembers(b)
		if (err == nil) != ok {
			t.Fatalf("AppendMembers(%q) err = %v, encoding/json ok = %v", b, err, ok)
		}
		if !ok {
			return
		}
		if len(members) != len(keys) {
			t.Fatalf("%d members, encoding/json %d", len(members), len(keys))
		}
		for i, m := range members {
			if k := string(KeyName(m.Key(b))); k != keys[i] {
				t.Errorf("key %d = %q, encoding/json %q", i, k, keys[i])
			}
			if raw := m.Key(b); !bytes.Equal(raw, rawKeys[i]) {
				t.Errorf("raw key %d = %q, encoding/json %q", i, raw, rawKeys[i])
			}
			if v := m.Value(b); !bytes.Equal(v, vals[i]) {
				t.Errorf("value %d = %q, encoding/json %q", i, v, vals[i])
			}
		}
	})
}

// FuzzScanArray checks StrictArray against encoding/json the same way.
func FuzzScanArray(f *testing.F) {
	strictSeeds(f)
	f.Add([]byte(` [1, "x" ,{"q":[]}] `))
	f.Add([]byte(`[[],[{}],-1]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got [][]byte
		it := StrictArray(b)
		for m, ok := it.Next(); ok; m, ok = it.Next() {
			if m.KeyStart != m.ValueStart || m.KeyEnd != m.ValueStart {
				t.Fatalf("element %d of %q has a key %d:%d", len(got), b, m.KeyStart, m.KeyEnd)
			}
			got = append(got, m.Value(b))
		}
		var want []json.RawMessage
		t0 := bytes.TrimLeft(b, " \t\r\n")
		ok := len(t0) > 0 && t0[0] == '[' && json.Unmarshal(b, &want) == nil
		if (it.Err() == nil) != ok {
			t.Fatalf("StrictArray(%q) err = %v, encoding/json ok = %v", b, it.Err(), ok)
		}
		if !ok {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d elements, encoding/json %d", b, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("element %d = %q, encoding/json %q", i, got[i], want[i])
			}
		}
	})
}
