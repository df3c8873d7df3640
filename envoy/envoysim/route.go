package envoysim

import (
	"sort"
	"strings"
)

// match selects the virtual host by :authority and the first matching route
// (RouteMatcher::findVirtualHost and VirtualHostImpl::getRouteFromEntries,
// source/common/router/config_impl.cc, Envoy 1.40).
func (rc *routeConfig) match(h *headerMap) (*virtualHost, *route) {
	vh := rc.findVirtualHost(strings.ToLower(h.Value(":authority")))
	if vh == nil {
		return nil, nil
	}
	for _, r := range vh.routes {
		if r.match.matches(h) {
			return vh, r
		}
	}
	return vh, nil
}

// findVirtualHost: exact domains first, then the longest suffix wildcard
// ("*.example.com"), then the longest prefix wildcard ("example.*"), then "*".
func (rc *routeConfig) findVirtualHost(host string) *virtualHost {
	var def *virtualHost
	type cand struct {
		vh  *virtualHost
		len int
	}
	var suffix, prefix []cand
	for _, vh := range rc.vhosts {
		for _, d := range vh.domains {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if def == nil {
					def = vh
				}
			case d == host:
				return vh
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
				suffix = append(suffix, cand{vh, len(d)})
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
				prefix = append(prefix, cand{vh, len(d)})
			}
		}
	}
	for _, cs := range [][]cand{suffix, prefix} {
		if len(cs) > 0 {
			sort.SliceStable(cs, func(i, j int) bool { return cs[i].len > cs[j].len })
			return cs[0].vh
		}
	}
	return def
}

// matches: prefix, path and safe_regex all match :path without its query
// and fragment (Matchers::PathMatcher::match →
// Http::PathUtil::removeQueryAndFragment, source/common/common/matchers.cc),
// then every header matcher must match.
func (m *routeMatch) matches(h *headerMap) bool {
	pathOnly := h.Value(":path")
	if i := strings.IndexAny(pathOnly, "?#"); i >= 0 {
		pathOnly = pathOnly[:i]
	}
	switch {
	case m.prefix != nil:
		if m.caseSensitive {
			if !strings.HasPrefix(pathOnly, *m.prefix) {
				return false
			}
		} else if !strings.HasPrefix(strings.ToLower(pathOnly), strings.ToLower(*m.prefix)) {
			return false
		}
	case m.path != nil:
		if m.caseSensitive {
			if pathOnly != *m.path {
				return false
			}
		} else if !strings.EqualFold(pathOnly, *m.path) {
			return false
		}
	case m.regex != nil:
		if !m.regex.MatchString(pathOnly) {
			return false
		}
	}
	for _, hm := range m.headers {
		if !hm.matches(h) {
			return false
		}
	}
	return true
}

// matches is HeaderMatcher evaluation with
// envoy.reloadable_features.match_headers_individually (default true since
// 1.39; source/common/http/header_utility.h matchesHeadersIndividually):
// a repeated header matches when one of its values does (an inverted
// matcher when none does) instead of matching the values joined by ",". A
// missing header matches only present_match false, or present_match true
// inverted; a string matcher never matches it, inverted or not
// (treat_missing_header_as_empty is not implemented).
func (hm headerMatcher) matches(h *headerMap) bool {
	vals := h.Values(hm.name)
	if hm.present != nil {
		if len(vals) == 0 {
			return hm.invert == *hm.present
		}
		return *hm.present != hm.invert
	}
	if len(vals) == 0 || hm.str == nil {
		return false
	}
	for _, v := range vals {
		if hm.str.matches(v) {
			return !hm.invert
		}
	}
	return hm.invert
}

func (sm *stringMatcher) matches(v string) bool {
	cmp := v
	lower := func(s string) string {
		if sm.ignoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch {
	case sm.exact != nil:
		return lower(cmp) == lower(*sm.exact)
	case sm.prefix != nil:
		return strings.HasPrefix(lower(cmp), lower(*sm.prefix))
	case sm.suffix != nil:
		return strings.HasSuffix(lower(cmp), lower(*sm.suffix))
	case sm.contains != nil:
		return strings.Contains(lower(cmp), lower(*sm.contains))
	case sm.regex != nil:
		return sm.regex.MatchString(cmp)
	}
	return false
}
