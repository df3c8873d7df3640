package eventstream

// The converter's JSON needs beyond scanning, which is jsonscan's: events
// are validated with its strict mode, so that the upstream bytes can be
// forwarded as they are and the steady state allocates nothing.

import "github.com/ccproxy/ccproxy/extproc/internal/jsonscan"

// rawName returns the member's key without its quotes, escapes not decoded:
// the converter matches keys by their bytes, as Bedrock never escapes them.
func rawName(b []byte, m jsonscan.Member) []byte { return b[m.KeyStart+1 : m.KeyEnd-1] }

// field returns the raw value of the first member of the valid object obj
// whose raw name is key.
func field(obj []byte, key string) ([]byte, bool) {
	it := jsonscan.StrictObject(obj)
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if string(rawName(obj, m)) == key {
			return m.Value(obj), true
		}
	}
	return nil, false
}

// parseCount parses a token count, a validated JSON number: a non-negative
// integer of at most 18 digits, which cannot overflow an int64.
func parseCount(v []byte) (int64, bool) {
	if len(v) > 18 {
		return 0, false
	}
	return jsonscan.Uint(v)
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
