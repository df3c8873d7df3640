package extprocrules

import (
	"iter"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerEntry is one header line. Keys are stored lower-case, as Envoy's
// LowerCaseString header map does.
type headerEntry struct {
	key   string
	value string
}

// HeaderMap is an ordered multi-map of headers with pseudo-headers, the shape
// of Envoy's Http::HeaderMap: ext_proc sees repeated keys as separate entries
// and pseudo-headers (:method, :path, :authority, :scheme, :status) in the same
// list (source/common/http/header_map_impl.cc, Envoy 1.40). The zero value is
// an empty map.
type HeaderMap struct {
	entries []headerEntry
}

// Get returns the first value of key (lower-case).
func (h *HeaderMap) Get(key string) (string, bool) {
	for _, e := range h.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

// Value returns the first value of key (lower-case), or "".
func (h *HeaderMap) Value(key string) string {
	v, _ := h.Get(key)
	return v
}

// Values returns every value of key (lower-case) in order. Envoy's header
// matchers try each value of a repeated header separately.
func (h *HeaderMap) Values(key string) []string {
	var vals []string
	for _, e := range h.entries {
		if e.key == key {
			vals = append(vals, e.value)
		}
	}
	return vals
}

// Has reports whether key (lower-case) is present.
func (h *HeaderMap) Has(key string) bool {
	_, ok := h.Get(key)
	return ok
}

// Set replaces every value of key with one value, keeping the position of the
// first occurrence (HeaderMapImpl::setCopy).
func (h *HeaderMap) Set(key, value string) {
	key = strings.ToLower(key)
	idx := -1
	out := h.entries[:0]
	for _, e := range h.entries {
		if e.key == key {
			if idx >= 0 {
				continue
			}
			idx = len(out)
			e.value = value
		}
		out = append(out, e)
	}
	h.entries = out
	if idx < 0 {
		h.Add(key, value)
	}
}

// Add appends a value. Pseudo-headers are kept in front of regular headers.
func (h *HeaderMap) Add(key, value string) {
	key = strings.ToLower(key)
	if strings.HasPrefix(key, ":") {
		i := 0
		for i < len(h.entries) && strings.HasPrefix(h.entries[i].key, ":") {
			i++
		}
		h.entries = append(h.entries, headerEntry{})
		copy(h.entries[i+1:], h.entries[i:])
		h.entries[i] = headerEntry{key: key, value: value}
		return
	}
	h.entries = append(h.entries, headerEntry{key: key, value: value})
}

// Remove removes every value of key.
func (h *HeaderMap) Remove(key string) {
	key = strings.ToLower(key)
	out := h.entries[:0]
	for _, e := range h.entries {
		if e.key != key {
			out = append(out, e)
		}
	}
	h.entries = out
}

// Len is the number of entries.
func (h *HeaderMap) Len() int { return len(h.entries) }

// All yields the entries in order, repeated keys as separate entries.
func (h *HeaderMap) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, e := range h.entries {
			if !yield(e.key, e.value) {
				return
			}
		}
	}
}

// Clone returns an independent copy.
func (h *HeaderMap) Clone() *HeaderMap {
	return &HeaderMap{entries: append([]headerEntry(nil), h.entries...)}
}

// ByteSize is the sum of key and value lengths (HeaderMapImpl::byteSize).
func (h *HeaderMap) ByteSize() int {
	n := 0
	for _, e := range h.entries {
		n += len(e.key) + len(e.value)
	}
	return n
}

// ToProto renders the map the way ext_proc sends it: values in raw_value
// (runtime default envoy.reloadable_features.send_header_raw_value;
// mutation_utils.cc headersToProto, Envoy 1.40).
func (h *HeaderMap) ToProto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h.entries))}
	for _, e := range h.entries {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.key, RawValue: []byte(e.value)})
	}
	return out
}

// validHeaderName mirrors HeaderUtility::headerNameIsValid
// (source/common/http/header_utility.cc, Envoy 1.40): pseudo-headers follow
// HTTP/2 rules, other names HTTP/1 token rules (upper case allowed).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	s := name
	if s[0] == ':' {
		s = s[1:]
		if s == "" {
			return false
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c >= 'A' && c <= 'Z' || !isTokenChar(c) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHeaderValue mirrors nghttp2_check_header_value as used by
// HeaderUtility::headerValueIsValid: no control characters except HTAB, no DEL.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
