package bedrock

import (
	"errors"
	"fmt"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
)

// maxDepth matches encoding/json's nesting limit so that the scanner accepts
// exactly the documents json.Valid accepts (see encoding/json/scanner.go,
// maxNestingDepth).
const maxDepth = 10000

// errSyntax is returned for any input that is not a single valid JSON object.
var errSyntax = errors.New("bedrock: body is not a valid JSON object")

// span is a half-open byte range [start, end) of the scanned input.
type span struct{ start, end int }

// member is one top-level object member: the raw quoted key and the raw value.
type member struct{ key, val span }

// scanObject validates that b is exactly one JSON object (surrounded by
// optional whitespace) and appends its members, in order, to dst. Nested
// values are validated but not recorded, so a 50 KB body is walked once with
// no allocation beyond dst's growth.
func scanObject(b []byte, dst []member) ([]member, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return dst, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return dst, errSyntax
			}
			ks := i
			var err error
			if i, err = skipString(b, i); err != nil {
				return dst, err
			}
			ke := i
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return dst, errSyntax
			}
			i = skipWS(b, i+1)
			vs := i
			if i, err = skipValue(b, i, 2); err != nil {
				return dst, err
			}
			dst = append(dst, member{key: span{ks, ke}, val: span{vs, i}})
			i = skipWS(b, i)
			if i >= len(b) {
				return dst, errSyntax
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return dst, errSyntax
			}
			i = skipWS(b, i+1)
		}
	}
	if skipWS(b, i) != len(b) {
		return dst, errSyntax
	}
	return dst, nil
}

// scanArray validates that b starts with a JSON array and appends the spans
// of its elements to dst.
func scanArray(b []byte, dst []span) ([]span, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return dst, nil
	}
	for {
		s := i
		var err error
		if i, err = skipValue(b, i, 2); err != nil {
			return dst, err
		}
		dst = append(dst, span{s, i})
		i = skipWS(b, i)
		if i >= len(b) {
			return dst, errSyntax
		}
		if b[i] == ']' {
			return dst, nil
		}
		if b[i] != ',' {
			return dst, errSyntax
		}
		i = skipWS(b, i+1)
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue validates the JSON value starting at b[i] and returns the index
// just past it. depth is the nesting level of the value itself.
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		return skipContainer(b, i, depth, '}')
	case c == '[':
		return skipContainer(b, i, depth, ']')
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	default:
		return i, errSyntax
	}
}

func skipContainer(b []byte, i, depth int, closer byte) (int, error) {
	if depth > maxDepth {
		return i, fmt.Errorf("%w: nesting deeper than %d", errSyntax, maxDepth)
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1, nil
	}
	for {
		var err error
		if closer == '}' {
			if i >= len(b) || b[i] != '"' {
				return i, errSyntax
			}
			if i, err = skipString(b, i); err != nil {
				return i, err
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, errSyntax
			}
			i = skipWS(b, i+1)
		}
		if i, err = skipValue(b, i, depth+1); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, errSyntax
		}
		if b[i] == closer {
			return i + 1, nil
		}
		if b[i] != ',' {
			return i, errSyntax
		}
		i = skipWS(b, i+1)
	}
}

// skipString validates the string starting at the quote b[i]. Like
// encoding/json it rejects control characters but not invalid UTF-8, which
// Bedrock receives unchanged, as it would from a direct client.
func skipString(b []byte, i int) (int, error) {
	i++
	for i < len(b) {
		i += jsonscan.PlainPrefix(b[i:])
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return i, errSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return i, errSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return i, errSyntax
					}
				}
				i += 6
			default:
				return i, errSyntax
			}
		case c < 0x20:
			return i, errSyntax
		default:
			i++
		}
	}
	return i, errSyntax
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, errSyntax
	}
	return i + len(lit), nil
}

func skipNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return i, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return i, errSyntax
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return i, errSyntax
		}
		i = j
	}
	return i, nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}
