package envoysim

import (
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerEntry is one header line. Keys are stored lower-case, as Envoy's
// LowerCaseString header map does.
type headerEntry struct {
	key   string
	value string
}

// headerMap is an ordered multi-map of headers with pseudo-headers, the shape
// of Envoy's Http::HeaderMap: ext_proc sees repeated keys as separate entries
// and pseudo-headers (:method, :path, :authority, :scheme, :status) in the same
// list (source/common/http/header_map_impl.cc, Envoy 1.40).
type headerMap struct {
	entries []headerEntry
}

func (h *headerMap) get(key string) (string, bool) {
	for _, e := range h.entries {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

func (h *headerMap) value(key string) string {
	v, _ := h.get(key)
	return v
}

// values returns every value of key in order.
func (h *headerMap) values(key string) []string {
	var vals []string
	for _, e := range h.entries {
		if e.key == key {
			vals = append(vals, e.value)
		}
	}
	return vals
}

func (h *headerMap) has(key string) bool {
	_, ok := h.get(key)
	return ok
}

// set replaces every value of key with one value, keeping the position of the
// first occurrence (HeaderMapImpl::setCopy).
func (h *headerMap) set(key, value string) {
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
		h.add(key, value)
	}
}

// add appends a value. Pseudo-headers are kept in front of regular headers.
func (h *headerMap) add(key, value string) {
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

func (h *headerMap) remove(key string) {
	key = strings.ToLower(key)
	out := h.entries[:0]
	for _, e := range h.entries {
		if e.key != key {
			out = append(out, e)
		}
	}
	h.entries = out
}

// byteSize is the sum of key and value lengths (HeaderMapImpl::byteSize).
func (h *headerMap) byteSize() int {
	n := 0
	for _, e := range h.entries {
		n += len(e.key) + len(e.value)
	}
	return n
}

// toProto renders the map the way ext_proc sends it: values in raw_value
// (runtime default envoy.reloadable_features.send_header_raw_value;
// mutation_utils.cc headersToProto, Envoy 1.40).
func (h *headerMap) toProto() *corev3.HeaderMap {
	out := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h.entries))}
	for _, e := range h.entries {
		out.Headers = append(out.Headers, &corev3.HeaderValue{Key: e.key, RawValue: []byte(e.value)})
	}
	return out
}

// hopByHop lists connection-specific headers that never cross the proxy.
var hopByHop = map[string]bool{
	"connection":        true,
	"keep-alive":        true,
	"proxy-connection":  true,
	"transfer-encoding": true,
	"upgrade":           true,
	"te":                true,
}

// requestHeaderMap builds the HCM's view of a downstream request: pseudo
// headers first, HTTP/1 Host folded into :authority.
func requestHeaderMap(r *http.Request, scheme string) *headerMap {
	h := &headerMap{}
	h.entries = append(h.entries,
		headerEntry{":authority", r.Host},
		headerEntry{":path", r.URL.RequestURI()},
		headerEntry{":method", r.Method},
		headerEntry{":scheme", scheme},
	)
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "host" {
			continue
		}
		for _, v := range vs {
			h.entries = append(h.entries, headerEntry{lk, v})
		}
	}
	return h
}

// httpHeader converts the regular (non-pseudo, non hop-by-hop) entries.
func (h *headerMap) httpHeader() http.Header {
	out := make(http.Header, len(h.entries))
	for _, e := range h.entries {
		if strings.HasPrefix(e.key, ":") || hopByHop[e.key] {
			continue
		}
		ck := http.CanonicalHeaderKey(e.key)
		out[ck] = append(out[ck], e.value)
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
