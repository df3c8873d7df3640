// Package bedrock owns the request-side translation of an Anthropic Messages
// request into an AWS Bedrock InvokeModel request, and the mapping of Bedrock
// HTTP errors back to Anthropic error responses.
//
// The translation never re-serialises the body: Claude Code sends ~50 KB per
// turn, so the top-level object is scanned once and the members that survive
// the allow-list are copied byte-for-byte, with the Bedrock-only members
// appended.
package bedrock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
)

// AnthropicVersion is the anthropic_version Bedrock requires in the body.
const AnthropicVersion = "bedrock-2023-05-31"

// Request is a translated Bedrock InvokeModel request.
type Request struct {
	// Path is the escaped request path, e.g.
	// /model/us.anthropic.claude-opus-5-5/invoke-with-response-stream.
	// SigV4 must sign exactly this string.
	Path string
	// Body is the Bedrock request body.
	Body []byte
	// Betas is the anthropic_beta array sent, in table order.
	Betas []string
	// DroppedBetas lists the header flags not forwarded, in header order.
	DroppedBetas []string
	// DroppedFields lists the body members removed by the field allow-list;
	// members of message objects appear as "messages[].<key>".
	DroppedFields []string
}

// Translator translates requests with one beta table and one field table.
// It is immutable and safe for concurrent use.
type Translator struct {
	betaVersion  string
	fieldVersion string
	betaIndex    map[string]int // Anthropic flag → index into betaNames
	betaNames    []string       // distinct Bedrock names in table order
	betaQuoted   []string       // betaNames as JSON strings
	topLevel     map[string]struct{}
	message      map[string]struct{}
	cacheControl map[string]struct{}
	// cleanCacheControl are the cache_control values that need no change
	// (as Claude Code spells them), for a fast check that a body has no
	// other.
	cleanCacheControl [][]byte
}

// NewTranslator builds a Translator from the given tables.
func NewTranslator(betas bedrockpolicy.BetaTable, fields bedrockpolicy.FieldTable) *Translator {
	t := &Translator{
		betaVersion:  betas.Version,
		fieldVersion: fields.Version,
		betaIndex:    make(map[string]int),
		topLevel:     make(map[string]struct{}, len(fields.TopLevel)),
		message:      make(map[string]struct{}, len(fields.Message)),
	}
	nameIndex := make(map[string]int)
	for _, r := range betas.Rules {
		var name string
		switch r.Action {
		case bedrockpolicy.BetaKeep:
			name = r.Anthropic
		case bedrockpolicy.BetaRename:
			name = r.Bedrock
		default:
			continue
		}
		if _, dup := t.betaIndex[r.Anthropic]; dup || name == "" {
			continue
		}
		idx, ok := nameIndex[name]
		if !ok {
			idx = len(t.betaNames)
			nameIndex[name] = idx
			t.betaNames = append(t.betaNames, name)
			q, _ := json.Marshal(name) // a Go string always marshals
			t.betaQuoted = append(t.betaQuoted, string(q))
		}
		t.betaIndex[r.Anthropic] = idx
	}
	for _, f := range fields.TopLevel {
		t.topLevel[f] = struct{}{}
	}
	for _, f := range fields.Message {
		t.message[f] = struct{}{}
	}
	cc := fields.CacheControl
	if len(cc) == 0 {
		cc = bedrockpolicy.DefaultFieldTable().CacheControl
	}
	t.cacheControl = make(map[string]struct{}, len(cc))
	for _, f := range cc {
		t.cacheControl[f] = struct{}{}
	}
	for _, v := range []string{`{"type":"ephemeral"}`, `{"type":"ephemeral","ttl":"5m"}`, `{"type":"ephemeral","ttl":"1h"}`} {
		if t.cacheControlKept(v) {
			t.cleanCacheControl = append(t.cleanCacheControl, []byte(`:`+v))
		}
	}
	return t
}

// cacheControlKept reports whether every member of the cache_control
// object v is on the allow-list.
func (t *Translator) cacheControlKept(v string) bool {
	members, err := jsonscan.AppendMembers(nil, []byte(v))
	if err != nil {
		return false
	}
	for _, m := range members {
		if _, ok := t.cacheControl[string(jsonscan.KeyName(m.Key([]byte(v))))]; !ok {
			return false
		}
	}
	return true
}

// mayNeedCacheControlFix reports whether body may hold a cache_control
// object with a member Bedrock refuses. Nearly every body holds only the
// spellings Claude Code uses, which one scan for the key recognises; only
// the rest is walked. A "cache_control" key inside a JSON string is always
// escaped (\"cache_control\"), so the scan sees only real members (and
// the rare string value "cache_control", which just takes the slow path).
//
// The scan looks for `_control"` rather than the whole key: bytes.Index
// jumps between occurrences of the first byte, and '"' is every few bytes
// in JSON while '_' is rare, which makes the scan several times faster.
// A key spelled with escapes ("cache\u005fcontrol") is not looked for:
// Claude Code never escapes keys, and looking for escapes costs as much
// again; such a key is only cut when the body also holds a plain one that
// needs the walk, and otherwise reaches Bedrock as sent.
func (t *Translator) mayNeedCacheControlFix(body []byte) bool {
	const head, tail = `"cache`, `_control"`
	for off := 0; ; {
		i := bytes.Index(body[off:], []byte(tail))
		if i < 0 {
			return false
		}
		i += off
		off = i + len(tail)
		if i < len(head) || string(body[i-len(head):i]) != head {
			continue
		}
		clean := false
		for _, c := range t.cleanCacheControl {
			if bytes.HasPrefix(body[off:], c) {
				clean = true
				break
			}
		}
		if !clean {
			return true
		}
	}
}

// Versions reports the versions of the beta and field tables in use.
func (t *Translator) Versions() (beta, field string) { return t.betaVersion, t.fieldVersion }

// ErrInvalidBody is returned (wrapped) when the body is not a JSON object.
var ErrInvalidBody = errSyntax

// errSyntax is returned for any input that is not a single valid JSON object.
var errSyntax = errors.New("bedrock: body is not a valid JSON object")

// invalidBody turns an error of the validating scan into the translation's
// own.
func invalidBody(err error) error {
	if errors.Is(err, jsonscan.ErrTooDeep) {
		return fmt.Errorf("%w: nesting deeper than %d", errSyntax, jsonscan.MaxDepth)
	}
	return errSyntax
}

// ErrEmptyModel is returned when no Bedrock model id is given.
var ErrEmptyModel = errors.New("bedrock: empty model id")

// TranslateRequest translates an Anthropic Messages body and its
// anthropic-beta header (all values joined with commas) into the Bedrock
// InvokeModel request for modelID, streaming or not.
func (t *Translator) TranslateRequest(body []byte, betaHeader string, stream bool, modelID string) (Request, error) {
	if modelID == "" {
		return Request{}, ErrEmptyModel
	}
	var membersBuf [16]jsonscan.Member
	members, err := jsonscan.AppendMembers(membersBuf[:0], body)
	if err != nil {
		return Request{}, invalidBody(err)
	}
	req := Request{Path: ModelPath(modelID, stream)}
	betaIdx, dropped := t.betas(betaHeader)
	req.DroppedBetas = dropped
	for _, i := range betaIdx {
		req.Betas = append(req.Betas, t.betaNames[i])
	}

	n := len(body) + len(`,"anthropic_version":"`+AnthropicVersion+`"}`) + len(`"anthropic_beta":[]`)
	for _, b := range req.Betas {
		n += len(b) + 3
	}
	fixCache := t.mayNeedCacheControlFix(body)
	out := make([]byte, 0, n)
	out = append(out, '{')
	first := true
	for _, m := range members {
		key := jsonscan.KeyName(m.Key(body))
		switch string(key) {
		case "model", "stream", "anthropic_version", "anthropic_beta":
			continue
		}
		if _, ok := t.topLevel[string(key)]; !ok {
			req.DroppedFields = appendUnique(req.DroppedFields, string(key))
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, m.Key(body)...)
		out = append(out, ':')
		val := m.Value(body)
		if string(key) == "messages" && val[0] == '[' {
			if out, req.DroppedFields, err = t.appendMessages(out, val, req.DroppedFields, fixCache); err != nil {
				return Request{}, err
			}
			continue
		}
		if fixCache && (string(key) == "system" || string(key) == "tools") && val[0] == '[' {
			var changed bool
			if val, changed, err = t.cleanBlocks(val); err != nil {
				return Request{}, err
			}
			if changed {
				req.DroppedFields = appendUnique(req.DroppedFields, string(key)+"[].cache_control")
			}
		}
		out = append(out, val...)
	}
	if len(req.Betas) > 0 {
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, `"anthropic_beta":[`...)
		for i, q := range betaIdx {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, t.betaQuoted[q]...)
		}
		out = append(out, ']')
	}
	if !first {
		out = append(out, ',')
	}
	out = append(out, `"anthropic_version":"`+AnthropicVersion+`"}`...)
	req.Body = out
	return req, nil
}

// appendMessages copies the messages array, removing members of message
// objects the message allow-list does not hold and, when fixCache is set,
// cache_control members Bedrock refuses from their content blocks.
// Elements that need no change are copied byte-for-byte.
func (t *Translator) appendMessages(out, val []byte, dropped []string, fixCache bool) ([]byte, []string, error) {
	cursor := 0
	var buf []jsonscan.Member
	var err error
	elems := jsonscan.StrictArray(val)
	for e, ok := elems.Next(); ok; e, ok = elems.Next() {
		elem := e.Value(val)
		if elem[0] != '{' {
			continue
		}
		if buf, err = jsonscan.AppendMembers(buf[:0], elem); err != nil {
			return out, dropped, invalidBody(err)
		}
		clean := true
		contentIdx := -1
		var content []byte
		for i, m := range buf {
			key := jsonscan.KeyName(m.Key(elem))
			if _, ok := t.message[string(key)]; !ok {
				clean = false
			}
			if string(key) == "content" {
				contentIdx = i
			}
		}
		if fixCache && contentIdx >= 0 {
			if v := buf[contentIdx].Value(elem); v[0] == '[' {
				var changed bool
				if content, changed, err = t.cleanBlocks(v); err != nil {
					return out, dropped, err
				}
				if changed {
					clean = false
					dropped = appendUnique(dropped, "messages[].content[].cache_control")
				} else {
					content = nil
				}
			}
		}
		if clean {
			continue
		}
		out = append(out, val[cursor:e.ValueStart]...)
		out = append(out, '{')
		first := true
		for _, m := range buf {
			key := jsonscan.KeyName(m.Key(elem))
			if _, ok := t.message[string(key)]; !ok {
				dropped = appendUnique(dropped, "messages[]."+string(key))
				continue
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, m.Key(elem)...)
			out = append(out, ':')
			if string(key) == "content" && content != nil {
				out = append(out, content...)
				continue
			}
			out = append(out, m.Value(elem)...)
		}
		out = append(out, '}')
		cursor = e.ValueEnd
	}
	if err := elems.Err(); err != nil {
		return out, dropped, invalidBody(err)
	}
	return append(out, val[cursor:]...), dropped, nil
}

// cleanBlocks returns the array of content blocks arr (system, tools, a
// message's content) with the cache_control members of its objects cut to
// the allow-list, and whether anything changed; a tool_result's own
// content blocks are cleaned too. An unchanged array is returned as is.
func (t *Translator) cleanBlocks(arr []byte) ([]byte, bool, error) {
	var out []byte
	cursor := 0
	var buf []jsonscan.Member
	var err error
	elems := jsonscan.StrictArray(arr)
	for e, ok := elems.Next(); ok; e, ok = elems.Next() {
		elem := e.Value(arr)
		if elem[0] != '{' || !bytes.Contains(elem, []byte(`_control"`)) && bytes.IndexByte(elem, '\\') < 0 {
			// Neither a plain nor an escaped cache_control key.
			continue
		}
		if buf, err = jsonscan.AppendMembers(buf[:0], elem); err != nil {
			return nil, false, invalidBody(err)
		}
		var block []byte
		for i, m := range buf {
			key := string(jsonscan.KeyName(m.Key(elem)))
			v := m.Value(elem)
			var repl []byte
			switch {
			case key == "cache_control" && v[0] == '{':
				var changed bool
				if repl, changed, err = t.cleanCacheControlValue(v); err != nil {
					return nil, false, err
				}
				if !changed {
					repl = nil
				}
			case key == "content" && v[0] == '[':
				var changed bool
				if repl, changed, err = t.cleanBlocks(v); err != nil {
					return nil, false, err
				}
				if !changed {
					repl = nil
				}
			}
			if repl == nil && block == nil {
				continue
			}
			if block == nil {
				// First change in this block: copy what came before.
				block = append(block, elem[:buf[i].KeyStart]...)
			} else {
				block = append(block, elem[buf[i-1].ValueEnd:m.KeyStart]...)
			}
			block = append(block, elem[m.KeyStart:m.ValueStart]...)
			if repl != nil {
				block = append(block, repl...)
			} else {
				block = append(block, v...)
			}
		}
		if block == nil {
			continue
		}
		block = append(block, elem[buf[len(buf)-1].ValueEnd:]...)
		out = append(out, arr[cursor:e.ValueStart]...)
		out = append(out, block...)
		cursor = e.ValueEnd
	}
	if err := elems.Err(); err != nil {
		return nil, false, invalidBody(err)
	}
	if out == nil {
		return arr, false, nil
	}
	return append(out, arr[cursor:]...), true, nil
}

// cleanCacheControlValue returns the cache_control object v with only the
// allowed members, and whether any was removed.
func (t *Translator) cleanCacheControlValue(v []byte) ([]byte, bool, error) {
	members, err := jsonscan.AppendMembers(nil, v)
	if err != nil {
		return nil, false, invalidBody(err)
	}
	out := []byte{'{'}
	changed := false
	for _, m := range members {
		if _, ok := t.cacheControl[string(jsonscan.KeyName(m.Key(v)))]; !ok {
			changed = true
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, v[m.KeyStart:m.ValueEnd]...)
	}
	return append(out, '}'), changed, nil
}

// betas turns the anthropic-beta header into indexes into t.betaNames, in
// table order, and the flags dropped.
func (t *Translator) betas(header string) (kept []int, dropped []string) {
	var seenBuf [64]bool
	var seen []bool
	if len(t.betaNames) <= len(seenBuf) {
		seen = seenBuf[:len(t.betaNames)]
	} else {
		seen = make([]bool, len(t.betaNames))
	}
	found := false
	for rest := header; rest != ""; {
		var flag string
		flag, rest, _ = strings.Cut(rest, ",")
		flag = strings.TrimSpace(flag)
		if flag == "" {
			continue
		}
		if idx, ok := t.betaIndex[flag]; ok {
			seen[idx] = true
			found = true
			continue
		}
		dropped = appendUnique(dropped, flag)
	}
	if !found {
		return nil, dropped
	}
	for i, s := range seen {
		if s {
			kept = append(kept, i)
		}
	}
	return kept, dropped
}

// ModelPath returns the InvokeModel path for modelID. Every byte outside
// RFC 3986's unreserved set is percent-encoded, as the AWS SDK does for
// path labels, so ARNs (with ':' and '/') form a single path segment and
// the path is already in the form SigV4's canonical request expects.
func ModelPath(modelID string, stream bool) string {
	const hex = "0123456789ABCDEF"
	suffix := "/invoke"
	if stream {
		suffix = "/invoke-with-response-stream"
	}
	var b strings.Builder
	b.Grow(len("/model/") + 3*len(modelID) + len(suffix))
	b.WriteString("/model/")
	for i := 0; i < len(modelID); i++ {
		c := modelID[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	b.WriteString(suffix)
	return b.String()
}

func isUnreserved(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
