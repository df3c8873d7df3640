package bedrock

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
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

// referenceRawMembers lists the top-level members the way encoding/json
// sees them: decoded key, raw (quoted, possibly escaped) key, raw value.
func referenceRawMembers(b []byte) (keys []string, rawKeys, vals [][]byte, ok bool) {
	if !isObject(b) {
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

// FuzzTranslateRequest checks every translation against a reference built
// with encoding/json from the tables alone: the output is the input's
// allow-listed members in order, keys and values byte-identical (message
// objects filtered to their own allow-list), then anthropic_beta (the
// header's kept and renamed flags, unique, in table order) and
// anthropic_version; the dropped fields and flags are reported exactly.
func FuzzTranslateRequest(f *testing.F) {
	fuzzSeeds(f)
	for _, h := range []string{
		"", ",, ,", " interleaved-thinking-2025-05-14 ,interleaved-thinking-2025-05-14",
		"advanced-tool-use-2025-11-20,tool-search-tool-2025-10-19,context-1m-2025-08-07,unknown,unknown,effort-2025-11-24",
		"output-128k-2025-02-19,computer-use-2024-10-22,claude-code-20250219,x,computer-use-2025-01-24",
	} {
		f.Add([]byte(`{"anthropic_beta":["x"],"anthropic_version":"v","stream":false,"model":"m","max_tokens":1,"top_k":2,"x":3,"x":4,`+
			`"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[],"output_config":{}},[],"s",`+
			`{"content":"c","cache":1,"role":"user","cache":2}],"system":[{"type":"text","text":"t"}]}`), h)
	}
	f.Add([]byte(`{"system":[{"type":"text","text":"a","cache_control":{"type":"ephemeral","scope":"global"}},{"cache_control":{"type":"ephemeral"}}],`+
		`"tools":[{"name":"t","cache_control":{ "scope" : 1 ,"ttl":"1h"}}],"messages":[{"role":"user","content":[{"type":"tool_result","content":[`+
		`{"type":"text","cache_control":{"type":"ephemeral","scope":"x"}}]},{"cache_control":{"type":"ephemeral","ttl":"5m"}}],"extra":1}]}`), "")
	f.Add([]byte(`{"tools":[{"cache_control":{"scope":1}},{"c\u0061che_control":{"scope":2,"type":"ephemeral"},"content":[{"cache_control":{"x":1}}]}],"messages":"cache_control"}`), "")
	betas, fields := bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable()
	tr := NewTranslator(betas, fields)
	ref := newReferenceTranslation(betas, fields)
	f.Fuzz(func(t *testing.T, b []byte, beta string) {
		got, err := tr.TranslateRequest(b, beta, true, "m")
		valid := isObject(b)
		if valid != (err == nil) {
			t.Fatalf("TranslateRequest(%q) err = %v, input valid object = %v", b, err, valid)
		}
		if err != nil {
			return
		}
		if want := ModelPath("m", true); got.Path != want {
			t.Errorf("path %q, want %q", got.Path, want)
		}
		keys, rawKeys, vals, ok := referenceRawMembers(got.Body)
		if !ok {
			t.Fatalf("output %q is not a JSON object", got.Body)
		}
		if refNeedsCacheFix(b, ref.cacheControl) {
			// cache_control objects are rebuilt: compared as decoded JSON.
			checkSemantic(t, ref, b, beta, got)
			return
		}
		want := ref.translate(t, b, beta)

		// The translation's own members come last, in this order.
		n := len(keys) - 1
		if n < 0 || keys[n] != "anthropic_version" || string(vals[n]) != `"`+AnthropicVersion+`"` {
			t.Fatalf("output %q does not end with anthropic_version %q", got.Body, AnthropicVersion)
		}
		var sentBetas []string
		if n > 0 && keys[n-1] == "anthropic_beta" {
			n--
			if err := json.Unmarshal(vals[n], &sentBetas); err != nil || sentBetas == nil {
				t.Fatalf("anthropic_beta %s is not an array of strings: %v", vals[n], err)
			}
		}
		if !slices.Equal(sentBetas, want.betas) || !slices.Equal(got.Betas, want.betas) {
			t.Errorf("betas: sent %q, reported %q; want %q (header %q)", sentBetas, got.Betas, want.betas, beta)
		}
		if !slices.Equal(got.DroppedBetas, want.droppedBetas) {
			t.Errorf("dropped betas %q, want %q", got.DroppedBetas, want.droppedBetas)
		}

		// Everything before them is the input's kept members.
		if n != len(want.keys) {
			t.Fatalf("output keeps %d members %q, want %d %q", n, keys[:n], len(want.keys), want.keys)
		}
		for i := range n {
			if keys[i] != want.keys[i] || !bytes.Equal(rawKeys[i], want.rawKeys[i]) {
				t.Errorf("member %d is %s, want the input's %s", i, rawKeys[i], want.rawKeys[i])
				continue
			}
			if want.messages[i] == nil {
				if !bytes.Equal(vals[i], want.vals[i]) {
					t.Errorf("member %q = %s, want the input's %s", keys[i], vals[i], want.vals[i])
				}
				continue
			}
			checkMessages(t, vals[i], want.messages[i])
		}
		if !slices.Equal(got.DroppedFields, want.droppedFields) {
			t.Errorf("dropped fields %q, want %q", got.DroppedFields, want.droppedFields)
		}
	})
}

// referenceTranslation computes what TranslateRequest must produce,
// independently of its scanner, from the tables as documented.
type referenceTranslation struct {
	nameOf       map[string]string // flag kept or renamed → Bedrock name (first rule wins)
	order        []string          // distinct Bedrock names in table order
	topLevel     map[string]bool
	message      map[string]bool
	cacheControl map[string]bool
}

func newReferenceTranslation(betas bedrockpolicy.BetaTable, fields bedrockpolicy.FieldTable) *referenceTranslation {
	r := &referenceTranslation{nameOf: map[string]string{}, topLevel: map[string]bool{}, message: map[string]bool{}, cacheControl: map[string]bool{}}
	for _, k := range fields.CacheControl {
		r.cacheControl[k] = true
	}
	for _, rule := range betas.Rules {
		name := rule.Anthropic
		switch rule.Action {
		case bedrockpolicy.BetaKeep:
		case bedrockpolicy.BetaRename:
			name = rule.Bedrock
		default:
			continue
		}
		if _, dup := r.nameOf[rule.Anthropic]; dup || name == "" {
			continue
		}
		r.nameOf[rule.Anthropic] = name
		if !slices.Contains(r.order, name) {
			r.order = append(r.order, name)
		}
	}
	for _, k := range fields.TopLevel {
		r.topLevel[k] = true
	}
	for _, k := range fields.Message {
		r.message[k] = true
	}
	return r
}

// wantMessage is one element of the messages array: the input element
// and, for an object, its members that must be kept.
type wantMessage struct {
	raw           []byte
	object        bool
	keys          []string
	rawKeys, vals [][]byte
	unfiltered    bool // every member allowed: copied byte for byte
}

type wantTranslation struct {
	keys                        []string
	rawKeys, vals               [][]byte
	messages                    [][]wantMessage // per kept member; nil unless it is a messages array
	betas                       []string
	droppedBetas, droppedFields []string
}

func (r *referenceTranslation) translate(t *testing.T, body []byte, header string) wantTranslation {
	t.Helper()
	var w wantTranslation
	keys, rawKeys, vals, ok := referenceRawMembers(body)
	if !ok {
		t.Fatalf("reference: %q is not an object", body)
	}
	addUnique := func(list []string, s string) []string {
		if slices.Contains(list, s) {
			return list
		}
		return append(list, s)
	}
	for i, k := range keys {
		switch k {
		case "model", "stream", "anthropic_version", "anthropic_beta":
			continue
		}
		if !r.topLevel[k] {
			w.droppedFields = addUnique(w.droppedFields, k)
			continue
		}
		w.keys, w.rawKeys, w.vals = append(w.keys, k), append(w.rawKeys, rawKeys[i]), append(w.vals, vals[i])
		var msgs []wantMessage
		if k == "messages" && vals[i][0] == '[' {
			var elems []json.RawMessage
			if err := json.Unmarshal(vals[i], &elems); err != nil {
				t.Fatalf("reference: messages %s: %v", vals[i], err)
			}
			msgs = make([]wantMessage, 0, len(elems))
			for _, e := range elems {
				m := wantMessage{raw: e, unfiltered: true}
				if mk, mr, mv, ok := referenceRawMembers(e); ok {
					m.object = true
					for j, key := range mk {
						if !r.message[key] {
							m.unfiltered = false
							w.droppedFields = addUnique(w.droppedFields, "messages[]."+key)
							continue
						}
						m.keys, m.rawKeys, m.vals = append(m.keys, key), append(m.rawKeys, mr[j]), append(m.vals, mv[j])
					}
				}
				msgs = append(msgs, m)
			}
		}
		w.messages = append(w.messages, msgs)
	}
	present := map[string]bool{}
	for _, flag := range strings.Split(header, ",") {
		flag = strings.TrimSpace(flag)
		if flag == "" {
			continue
		}
		if name, ok := r.nameOf[flag]; ok {
			present[name] = true
			continue
		}
		w.droppedBetas = addUnique(w.droppedBetas, flag)
	}
	for _, name := range r.order {
		if present[name] {
			w.betas = append(w.betas, name)
		}
	}
	return w
}

// checkMessages compares a translated messages array with the reference.
func checkMessages(t *testing.T, got []byte, want []wantMessage) {
	t.Helper()
	var elems []json.RawMessage
	if err := json.Unmarshal(got, &elems); err != nil || len(elems) != len(want) {
		t.Fatalf("messages %s: %d elements (%v), want %d", got, len(elems), err, len(want))
	}
	for i, w := range want {
		if !w.object || w.unfiltered {
			if !bytes.Equal(elems[i], w.raw) {
				t.Errorf("message %d = %s, want the input's %s", i, elems[i], w.raw)
			}
			continue
		}
		keys, rawKeys, vals, ok := referenceRawMembers(elems[i])
		if !ok || !slices.Equal(keys, w.keys) || !slices.EqualFunc(rawKeys, w.rawKeys, bytes.Equal) {
			t.Errorf("message %d keeps %q, want %q", i, rawKeys, w.rawKeys)
			continue
		}
		for j := range vals {
			if !bytes.Equal(vals[j], w.vals[j]) {
				t.Errorf("message %d member %q = %s, want the input's %s", i, keys[j], vals[j], w.vals[j])
			}
		}
	}
}

// isObject reports whether encoding/json accepts b as one JSON object.
func isObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return json.Valid(b) && len(t) > 0 && t[0] == '{'
}

// refNeedsCacheFix reports whether the translation must walk the body for
// cache_control objects, as documented: some plainly spelled
// "cache_control" key is not followed by one of the spellings Claude Code
// uses that the allow-list keeps whole.
func refNeedsCacheFix(b []byte, allowed map[string]bool) bool {
	var clean []string
	for _, v := range []string{`{"type":"ephemeral"}`, `{"type":"ephemeral","ttl":"5m"}`, `{"type":"ephemeral","ttl":"1h"}`} {
		var m map[string]any
		_ = json.Unmarshal([]byte(v), &m)
		ok := true
		for k := range m {
			ok = ok && allowed[k]
		}
		if ok {
			clean = append(clean, ":"+v)
		}
	}
	s := string(b)
	for {
		i := strings.Index(s, `"cache_control"`)
		if i < 0 {
			return false
		}
		s = s[i+len(`"cache_control"`):]
		if !slices.ContainsFunc(clean, func(c string) bool { return strings.HasPrefix(s, c) }) {
			return true
		}
	}
}

// checkSemantic compares a translation whose cache_control objects were
// rebuilt with the reference applied to the decoded input.
func checkSemantic(t *testing.T, r *referenceTranslation, in []byte, beta string, got Request) {
	t.Helper()
	var want map[string]any
	if err := json.Unmarshal(in, &want); err != nil {
		t.Fatalf("reference: %v", err)
	}
	var clean func(v any)
	clean = func(v any) {
		arr, ok := v.([]any)
		if !ok {
			return
		}
		for _, e := range arr {
			blk, ok := e.(map[string]any)
			if !ok {
				continue
			}
			if cc, ok := blk["cache_control"].(map[string]any); ok {
				for k := range cc {
					if !r.cacheControl[k] {
						delete(cc, k)
					}
				}
			}
			clean(blk["content"])
		}
	}
	for k := range want {
		if !r.topLevel[k] {
			delete(want, k)
		}
	}
	clean(want["system"])
	clean(want["tools"])
	if msgs, ok := want["messages"].([]any); ok {
		for _, m := range msgs {
			if obj, ok := m.(map[string]any); ok {
				for k := range obj {
					if !r.message[k] {
						delete(obj, k)
					}
				}
				clean(obj["content"])
			}
		}
	}
	w := r.translate(t, in, beta)
	if len(w.betas) > 0 {
		bs := make([]any, len(w.betas))
		for i, b := range w.betas {
			bs[i] = b
		}
		want["anthropic_beta"] = bs
	}
	want["anthropic_version"] = AnthropicVersion
	var out map[string]any
	if err := json.Unmarshal(got.Body, &out); err != nil {
		t.Fatalf("output %q: %v", got.Body, err)
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("translation of %q\n got %v\nwant %v", in, out, want)
	}
}
