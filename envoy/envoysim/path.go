package envoysim

import (
	"strings"
	"unicode/utf8"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Path normalisation of the HTTP connection manager: what Envoy does to :path before any
// filter runs when normalize_path, merge_slashes or path_with_escaped_slashes_action are
// configured (ConnectionManagerUtility::maybeNormalizePath in
// source/common/http/conn_manager_utility.cc, called from ActiveStream::decodeHeaders in
// source/common/http/conn_manager_impl.cc; the same at v1.37.0, commit 6d9bb7d9, v1.38.0,
// f1dd21b1, and on main in July 2026, 6806efb8). The steps, in Envoy's order:
//
//  1. a path holding a fragment ('#') is rejected (runtime flag
//     http_reject_path_with_fragment, on by default);
//  2. path_with_escaped_slashes_action other than KEEP_UNCHANGED: %2F, %2f, %5C and %5c are
//     decoded (PathUtil::unescapeSlashes) and then REJECT_REQUEST rejects, UNESCAPE_AND_FORWARD
//     goes on (UNESCAPE_AND_REDIRECT is not implemented: compile refuses it);
//  3. normalize_path: PathUtil::canonicalPath — Chromium's url::CanonicalizePath
//     (url/url_canon_path.cc) on the part before '?', the query appended unchanged; failure
//     rejects;
//  4. merge_slashes: PathUtil::mergeSlashes — runs of '/' in the part before '?' become one.
//
// A rejection is a 400 local reply with details path_normalization_failed, sent before the
// filter chain exists (no ext_proc filter sees it).

// pathNormalization is the compiled configuration.
type pathNormalization struct {
	normalize      bool
	mergeSlashes   bool
	escapedSlashes hcmv3.HttpConnectionManager_PathWithEscapedSlashesAction
}

func (n pathNormalization) enabled() bool {
	return n.normalize || n.mergeSlashes || n.escapedSlashes != hcmv3.HttpConnectionManager_KEEP_UNCHANGED &&
		n.escapedSlashes != hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT
}

// apply returns the normalised path, or ok false when Envoy rejects it.
func (n pathNormalization) apply(path string) (string, bool) {
	if strings.IndexByte(path, '#') >= 0 {
		return "", false
	}
	switch n.escapedSlashes {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		p, found := unescapeSlashes(path)
		if found && n.escapedSlashes == hcmv3.HttpConnectionManager_REJECT_REQUEST {
			return "", false
		}
		path = p
	}
	if n.normalize {
		p, q := splitQuery(path)
		c, ok := canonicalizePath(p)
		if !ok {
			return "", false
		}
		path = c + q
	}
	if n.mergeSlashes {
		path = mergeSlashes(path)
	}
	return path, true
}

// splitQuery splits path at its first '?' (kept with the query).
func splitQuery(path string) (p, q string) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[:i], path[i:]
	}
	return path, ""
}

// unescapeSlashes decodes %2F/%2f to '/' and %5C/%5c to '\' in the part before '?'
// (PathUtil::unescapeSlashes) and reports whether it found any.
func unescapeSlashes(path string) (string, bool) {
	p, q := splitQuery(path)
	var b strings.Builder
	found := false
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			switch p[i+1 : i+3] {
			case "2F", "2f":
				b.WriteByte('/')
				i += 2
				found = true
				continue
			case "5C", "5c":
				b.WriteByte('\\')
				i += 2
				found = true
				continue
			}
		}
		b.WriteByte(p[i])
	}
	if !found {
		return path, false
	}
	return b.String() + q, true
}

// mergeSlashes is PathTransformer::mergeSlashes: the part before '?' is split on '/' with
// empty segments skipped and joined again, keeping one leading and one trailing slash.
func mergeSlashes(path string) string {
	p, q := splitQuery(path)
	if !strings.Contains(p, "//") {
		return path
	}
	var segs []string
	for s := range strings.SplitSeq(p, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	prefix, suffix := "", ""
	if strings.HasPrefix(p, "/") {
		prefix = "/"
	}
	if strings.HasSuffix(p, "/") {
		suffix = "/"
	}
	joined := strings.Join(segs, "/")
	if joined == "" {
		// Envoy's StrCat of "/" + "" + "/" gives "//" for a path of slashes only.
		return prefix + suffix + q
	}
	return prefix + joined + suffix + q
}

// Character classes of Chromium's kPathCharLookup (url/url_canon_path.cc).
const (
	pathPass     = iota // copied
	pathEscape          // percent-encoded in the output
	pathUnescape        // copied; its %XX form is decoded
	pathInvalid         // fails canonicalisation
)

func pathClass(c byte) int {
	switch {
	case c == 0:
		return pathInvalid
	case c < 0x21 || c >= 0x7f:
		return pathEscape
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return pathUnescape
	}
	switch c {
	case '-', '.', '_', '~':
		return pathUnescape
	case '"', '#', '<', '>', '?', '`', '{', '}':
		return pathEscape
	}
	return pathPass
}

// canonicalizePath is url::CanonicalizePath for a standard (http) URL's path: backslashes
// become slashes; "." and ".." segments, also spelled %2e, are resolved; escapes of
// unreserved characters are decoded and other escapes kept as written; characters that
// cannot appear in a path are percent-encoded (UTF-8 for non-ASCII). It fails on NUL and on
// invalid UTF-8, as Chromium's canonicaliser reports failure for them.
func canonicalizePath(p string) (string, bool) {
	if !utf8.ValidString(p) {
		return "", false
	}
	var segs []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' || p[i] == '\\' {
			segs = append(segs, p[start:i])
			start = i + 1
		}
	}
	// The part before the first slash is the first segment; a path not starting with a
	// slash gets one (CanonicalizePath always writes a leading '/').
	first := segs[0]
	segs = segs[1:]
	if first != "" {
		segs = append([]string{first}, segs...)
	}
	var out []string
	trailing := false
	for k, seg := range segs {
		last := k == len(segs)-1
		switch dotKind(seg) {
		case 1:
			trailing = last
			continue
		case 2:
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
			continue
		}
		c, ok := canonicalSegment(seg)
		if !ok {
			return "", false
		}
		out = append(out, c)
	}
	path := "/" + strings.Join(out, "/")
	if trailing && !strings.HasSuffix(path, "/") {
		path += "/"
	}
	return path, true
}

// dotKind is 1 for a "." segment, 2 for "..", in any mix of '.' and %2e; 0 otherwise.
func dotKind(seg string) int {
	dots := 0
	for seg != "" {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case len(seg) >= 3 && seg[0] == '%' && seg[1] == '2' && (seg[2] == 'e' || seg[2] == 'E'):
			seg = seg[3:]
		default:
			return 0
		}
		dots++
	}
	if dots > 2 {
		return 0
	}
	return dots
}

// canonicalSegment canonicalises the characters of one segment.
func canonicalSegment(seg string) (string, bool) {
	var out []byte
	for i := 0; i < len(seg); {
		c := seg[i]
		if c == '%' {
			if i+2 < len(seg) && isHex(seg[i+1]) && isHex(seg[i+2]) {
				v := unhex(seg[i+1])<<4 | unhex(seg[i+2])
				if pathClass(v) == pathUnescape {
					out = append(out, v)
				} else {
					out = append(out, seg[i:i+3]...)
				}
				i += 3
				continue
			}
			// An invalid escape: Chromium passes the '%' through.
			out = append(out, '%')
			i++
			continue
		}
		switch pathClass(c) {
		case pathInvalid:
			return "", false
		case pathEscape:
			out = append(out, '%', upperHex[c>>4], upperHex[c&0xf])
		default:
			out = append(out, c)
		}
		i++
	}
	return string(out), true
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
