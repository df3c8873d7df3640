package bedrock

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":-0.5e+3,"b":[true,false,null],"c":{"d":"\u00e9\n"}}`,
		`{"model":"x","stream":true,"messages":[{"role":"user","output_config":{},"content":"hi"}]}`,
		`{"m\u006fdel":1}`, `{"a":01}`, `{"a":1,}`, `{"a" 1}`, `[1]`, `{"a":"\x01"}`, `{"a":1}{}`,
		`{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `{"a":1.}`, `{"a":-}`, `{"a":tru}`, `{"a":[1 2]}`,
		`{"messages":[1,"x",{"q":1}]}`, `{"messages":{}}`,
	} {
		f.Add([]byte(s), "interleaved-thinking-2025-05-14,unknown")
	}
	body, err := os.ReadFile(filepath.Join(captureDir, "anthropic-turn2-tool-result.body.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body, "claude-code-20250219,advanced-tool-use-2025-11-20")
}

// referenceMembers lists the top-level members the way encoding/json sees
// them: decoded key and raw value.
func referenceMembers(b []byte) (keys []string, vals [][]byte, ok bool) {
	if !isObject(b) {
		return nil, nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, nil, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		keys = append(keys, k.(string))
		vals = append(vals, v)
	}
	return keys, vals, true
}

// FuzzScanObject checks the hand-written scanner against encoding/json:
// same acceptance, same member keys and raw values, in order.
func FuzzScanObject(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ string) {
		members, err := scanObject(b, nil)
		keys, vals, ok := referenceMembers(b)
		if (err == nil) != ok {
			t.Fatalf("scanObject(%q) err = %v, encoding/json ok = %v", b, err, ok)
		}
		if !ok {
			return
		}
		if len(members) != len(keys) {
			t.Fatalf("%d members, encoding/json %d", len(members), len(keys))
		}
		for i, m := range members {
			if k := string(keyName(b[m.key.start:m.key.end])); k != keys[i] {
				t.Errorf("key %d = %q, encoding/json %q", i, k, keys[i])
			}
			if v := b[m.val.start:m.val.end]; !bytes.Equal(v, vals[i]) {
				t.Errorf("value %d = %q, encoding/json %q", i, v, vals[i])
			}
		}
	})
}

// FuzzTranslateRequest checks that translation never panics and yields a
// valid JSON object for every valid JSON object.
func FuzzTranslateRequest(f *testing.F) {
	fuzzSeeds(f)
	tr := NewTranslator(DefaultBetaTable(), DefaultFieldTable())
	f.Fuzz(func(t *testing.T, b []byte, beta string) {
		got, err := tr.TranslateRequest(b, beta, true, "m")
		valid := isObject(b)
		if valid != (err == nil) {
			t.Fatalf("TranslateRequest(%q) err = %v, input valid object = %v", b, err, valid)
		}
		if err != nil {
			return
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(got.Body, &out); err != nil {
			t.Fatalf("output %q is not a JSON object: %v", got.Body, err)
		}
		for _, k := range []string{"model", "stream", "context_management"} {
			if _, ok := out[k]; ok {
				t.Errorf("output keeps %q", k)
			}
		}
		if string(out["anthropic_version"]) != `"`+AnthropicVersion+`"` {
			t.Errorf("anthropic_version = %s", out["anthropic_version"])
		}
	})
}

// isObject reports whether encoding/json accepts b as one JSON object.
func isObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return json.Valid(b) && len(t) > 0 && t[0] == '{'
}
