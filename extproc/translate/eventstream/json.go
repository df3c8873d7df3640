package eventstream

// A minimal JSON scanner: it validates syntax and finds members without
// building values, so that the steady state allocates nothing and the
// upstream event bytes can be forwarded as they are.

import "github.com/ccproxy/ccproxy/extproc/internal/jsonscan"

// maxDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxDepth = 256

// strStop marks bytes that end the fast path of a string scan.
var strStop = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'] = true
	t['\\'] = true
	return t
}()

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// scanString scans the string starting at b[i] == '"' and returns the index
// after the closing quote and whether it contained escapes.
func scanString(b []byte, i int) (end int, esc, ok bool) {
	i++
	for i < len(b) {
		i += jsonscan.PlainPrefix(b[i:])
		if i >= len(b) {
			break
		}
		c := b[i]
		if !strStop[c] {
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1, esc, true
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return 0, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false, false
				}
				i += 6
			default:
				return 0, false, false
			}
		default:
			return 0, false, false
		}
	}
	return 0, false, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, true
}

func scanLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// scanValue scans the value starting at b[i] (no leading whitespace) and
// returns the index after it.
func scanValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case '{':
		if depth >= maxDepth {
			return 0, false
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return 0, false
			}
			var ok bool
			if i, _, ok = scanString(b, i); !ok {
				return 0, false
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return 0, false
			}
			if i, ok = scanValue(b, skipWS(b, i+1), depth+1); !ok {
				return 0, false
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, false
			}
			if b[i] == '}' {
				return i + 1, true
			}
			if b[i] != ',' {
				return 0, false
			}
			i = skipWS(b, i+1)
		}
	case '[':
		if depth >= maxDepth {
			return 0, false
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = scanValue(b, i, depth+1); !ok {
				return 0, false
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, false
			}
			if b[i] == ']' {
				return i + 1, true
			}
			if b[i] != ',' {
				return 0, false
			}
			i = skipWS(b, i+1)
		}
	case 't':
		return scanLiteral(b, i, "true")
	case 'f':
		return scanLiteral(b, i, "false")
	case 'n':
		return scanLiteral(b, i, "null")
	default:
		return scanNumber(b, i)
	}
}

// member is one top-level member of an object.
type member struct {
	keyStart   int    // index of the key's opening quote
	key        []byte // key without quotes (raw; escapes not decoded)
	value      []byte // the value's raw bytes
	valueEnd   int    // index after the value
	afterComma int    // index of the next key (after comma and whitespace), or -1
}

// objectIter walks the members of an object, validating each value.
type objectIter struct {
	b   []byte
	i   int
	err bool
	end bool
}

// newObjectIter starts at b[i], which must be '{' (after whitespace).
func newObjectIter(b []byte) objectIter {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return objectIter{err: true}
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return objectIter{b: b, i: i + 1, end: true}
	}
	return objectIter{b: b, i: i}
}

// next returns the next member; false at the end or on a syntax error
// (check it.err).
func (it *objectIter) next() (member, bool) {
	if it.err || it.end {
		return member{}, false
	}
	b, i := it.b, it.i
	if i >= len(b) || b[i] != '"' {
		it.err = true
		return member{}, false
	}
	m := member{keyStart: i, afterComma: -1}
	kend, _, ok := scanString(b, i)
	if !ok {
		it.err = true
		return member{}, false
	}
	m.key = b[i+1 : kend-1]
	i = skipWS(b, kend)
	if i >= len(b) || b[i] != ':' {
		it.err = true
		return member{}, false
	}
	vstart := skipWS(b, i+1)
	vend, ok := scanValue(b, vstart, 1)
	if !ok {
		it.err = true
		return member{}, false
	}
	m.value, m.valueEnd = b[vstart:vend], vend
	i = skipWS(b, vend)
	switch {
	case i < len(b) && b[i] == '}':
		it.end = true
		it.i = i + 1
	case i < len(b) && b[i] == ',':
		i = skipWS(b, i+1)
		m.afterComma = i
		it.i = i
	default:
		it.err = true
		return member{}, false
	}
	return m, true
}

// trailingOK reports whether only whitespace follows a fully iterated object.
func (it *objectIter) trailingOK() bool {
	return !it.err && it.end && skipWS(it.b, it.i) == len(it.b)
}

// field returns the raw value of key in the valid object obj.
func field(obj []byte, key string) ([]byte, bool) {
	it := newObjectIter(obj)
	for m, ok := it.next(); ok; m, ok = it.next() {
		if string(m.key) == key {
			return m.value, true
		}
	}
	return nil, false
}

// parseCount parses a non-negative JSON integer.
func parseCount(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
