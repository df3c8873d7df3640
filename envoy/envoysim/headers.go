package envoysim

import (
	"net/http"
	"strings"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// headerMap is Envoy's Http::HeaderMap as ext_proc presents it: an ordered
// multi-map, pseudo-headers first.
type headerMap = extprocrules.HeaderMap

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
	h.Add(":authority", r.Host)
	// Envoy's :path is the request target as received (origin form); Go's URL round trip
	// would re-escape it and hide what path normalisation must see.
	if strings.HasPrefix(r.RequestURI, "/") {
		h.Add(":path", r.RequestURI)
	} else {
		h.Add(":path", r.URL.RequestURI())
	}
	h.Add(":method", r.Method)
	h.Add(":scheme", scheme)
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == "host" {
			continue
		}
		for _, v := range vs {
			h.Add(lk, v)
		}
	}
	return h
}

// httpHeader converts the regular (non-pseudo, non hop-by-hop) entries.
func httpHeader(h *headerMap) http.Header {
	out := make(http.Header, h.Len())
	for k, v := range h.All() {
		if strings.HasPrefix(k, ":") || hopByHop[k] {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		out[ck] = append(out[ck], v)
	}
	return out
}
