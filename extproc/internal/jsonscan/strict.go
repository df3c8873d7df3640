package jsonscan

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of objects and arrays the validating scan
// accepts, the outermost container counting as 1.
//
// It is encoding/json's own limit (maxNestingDepth in its scanner), so the
// validating scan accepts exactly the documents json.Valid accepts: the
// Bedrock translation refuses no request body Anthropic would read, and the
// stream converter forwards every event a JSON client can read. The
// validating scan recurses once per level, so the limit also bounds the
// goroutine stack that hostile input can make it use, as it does for
// encoding/json's decoder, which recurses the same way. The skimming Iter
// counts brackets instead of recursing and needs no limit.
const MaxDepth = 10000

// ErrTooDeep is returned by the validating scan for input nested deeper
// than MaxDepth.
var ErrTooDeep = fmt.Errorf("jsonscan: nesting deeper than %d", MaxDepth)

// Member is one member of a JSON object, or one element of a JSON array, as
// byte offsets into the scanned input: the key with its quotes (escapes not
// decoded; empty for an array element) and the value.
type Member struct {
	KeyStart, KeyEnd     int
	ValueStart, ValueEnd int
}

// Key returns the raw key, quotes included, from the scanned input b.
func (m Member) Key(b []byte) []byte { return b[m.KeyStart:m.KeyEnd] }

// Value returns the raw value from the scanned input b.
func (m Member) Value(b []byte) []byte { return b[m.ValueStart:m.ValueEnd] }

// Strict iterates over the members of one JSON object, or the elements of
// one JSON array, validating the input as it goes: unlike Iter, it returns
// a member only once the member, its value in full (to MaxDepth) and the
// ',' or closing bracket after it are valid JSON, and it requires the input
// to hold nothing but that one value and whitespace. The zero Strict is not
// usable; create one with StrictObject or StrictArray.
type Strict struct {
	b      []byte
	i      int
	closer byte // '}' or ']'
	state  uint8
	err    error
}

// StrictObject returns a validating iterator over the members of the JSON
// object b holds.
func StrictObject(b []byte) Strict { return Strict{b: b, closer: '}'} }

// StrictArray returns a validating iterator over the elements of the JSON
// array b holds.
func StrictArray(b []byte) Strict { return Strict{b: b, closer: ']'} }

// Next returns the next member. ok is false at the end of the container or
// on invalid input; Err tells which.
func (it *Strict) Next() (m Member, ok bool) {
	b, i := it.b, it.i
	switch it.state {
	case stateStart:
		open := byte('{')
		if it.closer == ']' {
			open = '['
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != open {
			return it.fail(ErrSyntax)
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == it.closer {
			it.end(i + 1)
			return Member{}, false
		}
	case stateNext:
	default:
		return Member{}, false
	}
	m.KeyStart, m.KeyEnd = i, i
	if it.closer == '}' {
		if i >= len(b) || b[i] != '"' {
			return it.fail(ErrSyntax)
		}
		if m.KeyEnd, ok = validString(b, i); !ok {
			return it.fail(ErrSyntax)
		}
		i = skipWS(b, m.KeyEnd)
		if i >= len(b) || b[i] != ':' {
			return it.fail(ErrSyntax)
		}
		i = skipWS(b, i+1)
	}
	m.ValueStart = i
	var err error
	if m.ValueEnd, err = validValue(b, i, 2); err != nil {
		return it.fail(err)
	}
	i = skipWS(b, m.ValueEnd)
	switch {
	case i >= len(b):
		return it.fail(ErrSyntax)
	case b[i] == ',':
		it.i = skipWS(b, i+1)
		it.state = stateNext
	case b[i] == it.closer:
		it.end(i + 1)
	default:
		return it.fail(ErrSyntax)
	}
	return m, true
}

// Err reports why Next returned false: nil if the input was exactly one
// valid JSON object (or array) with only whitespace around it, else
// ErrSyntax or ErrTooDeep. Before Next has returned false it reports
// ErrSyntax, as the end of the input has not been checked yet.
func (it *Strict) Err() error {
	if it.state != stateDone {
		return ErrSyntax
	}
	return it.err
}

// end records the closing bracket just before b[i]: only whitespace may
// follow it.
func (it *Strict) end(i int) {
	it.state = stateDone
	if skipWS(it.b, i) != len(it.b) {
		it.err = ErrSyntax
	}
}

func (it *Strict) fail(err error) (Member, bool) {
	it.state = stateDone
	it.err = err
	return Member{}, false
}

// AppendMembers validates that b holds exactly one JSON object (whitespace
// around it allowed) and appends its members, in order, to dst. Nested
// values are validated but not recorded, so a 50 KB body is walked once
// with no allocation beyond dst's growth.
func AppendMembers(dst []Member, b []byte) ([]Member, error) {
	it := StrictObject(b)
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		dst = append(dst, m)
	}
	return dst, it.Err()
}

// KeyName returns the decoded name of a raw, quoted JSON key the validating
// scan accepted, exactly as encoding/json decodes it. Plain ASCII names are
// returned in place, without allocating; escaped or non-ASCII names are
// rare and decoded, so that an escaped spelling cannot pass for another
// name.
func KeyName(raw []byte) []byte {
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' || c >= utf8.RuneSelf {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				// Unreachable for validated keys; a caller matching
				// names against a list then matches nothing.
				return raw
			}
			return []byte(s)
		}
	}
	return inner
}

// validValue returns the index just past the JSON value starting at b[i].
// depth is the nesting level a container starting there would have.
func validValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, ErrSyntax
	}
	var ok bool
	switch b[i] {
	case '"':
		i, ok = validString(b, i)
	case '{', '[':
		return validContainer(b, i, depth)
	case 't':
		i, ok = validLiteral(b, i, "true")
	case 'f':
		i, ok = validLiteral(b, i, "false")
	case 'n':
		i, ok = validLiteral(b, i, "null")
	default:
		i, ok = validNumber(b, i)
	}
	if !ok {
		return i, ErrSyntax
	}
	return i, nil
}

// validContainer returns the index just past the object or array starting
// at b[i], which is at nesting level depth.
func validContainer(b []byte, i, depth int) (int, error) {
	if depth > MaxDepth {
		return i, ErrTooDeep
	}
	closer := byte('}')
	if b[i] == '[' {
		closer = ']'
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1, nil
	}
	for {
		var ok bool
		if closer == '}' {
			if i >= len(b) || b[i] != '"' {
				return i, ErrSyntax
			}
			if i, ok = validString(b, i); !ok {
				return i, ErrSyntax
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, ErrSyntax
			}
			i = skipWS(b, i+1)
		}
		var err error
		if i, err = validValue(b, i, depth+1); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		switch {
		case i >= len(b):
			return i, ErrSyntax
		case b[i] == closer:
			return i + 1, nil
		case b[i] != ',':
			return i, ErrSyntax
		}
		i = skipWS(b, i+1)
	}
}

// strStop marks the bytes that end a run of plain string content.
var strStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'] = true
	t['\\'] = true
	return t
}()

// validString returns the index just past the JSON string starting at the
// quote b[i]. Like encoding/json it rejects control characters and
// malformed escapes but not invalid UTF-8, which the callers forward
// unchanged, as a direct client's server would receive it.
func validString(b []byte, i int) (int, bool) {
	i++
	for {
		// Whole plain words first, then the at most 7 plain bytes before
		// the special one (or the input's end).
		i += PlainPrefix(b[i:])
		for i < len(b) && !strStop[b[i]] {
			i++
		}
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case '"':
			return i + 1, true
		case '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		default: // a control character
			return i, false
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func validLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// validNumber returns the index just past the JSON number starting at b[i].
func validNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return i, false
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
			return i, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}
