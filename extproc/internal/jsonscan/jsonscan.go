// Package jsonscan owns extproc's JSON scanning: finding the members of
// request bodies, response bodies and stream events without decoding them.
//
// extproc reads a handful of fields (the request's model and stream flag, a
// response's usage, a stream event's type) from bodies of up to 32 MB that
// it must forward byte for byte. Decoding them with encoding/json would
// allocate the whole document; this package instead hands back sub-slices
// of (or offsets into) the input, allocating nothing.
//
// It scans in two modes:
//
//   - Skimming (Object, Iter, Find) checks only the structure it needs to
//     find member boundaries and skips over values with bytes.IndexByte. It
//     never panics on malformed input, and for input that is valid JSON it
//     reports exactly what encoding/json's Decoder reports (the
//     differential fuzz test holds it to that). The router and the usage
//     metering use it: they forward the body whatever it holds.
//   - Validating (StrictObject, StrictArray, AppendMembers) accepts exactly
//     what json.Valid accepts, nesting to MaxDepth, the one depth limit of
//     the package. The Bedrock translation, which rebuilds a body from its
//     members, and the event stream converter, which must not forward a
//     corrupt event, use it.
//
// String, Bool, Uint and KeyName decode the raw values and keys either mode
// returns; PlainPrefix is the word-at-a-time step of string scanning.
package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// ErrSyntax is returned by Iter.Err and Strict.Err when the input is not a
// JSON object (or, for StrictArray, array) the scanner can walk.
var ErrSyntax = errors.New("jsonscan: malformed JSON object")

// Iter iterates over the members of one JSON object. The zero Iter is not
// usable; create one with Object.
type Iter struct {
	b     []byte
	i     int
	state uint8
	err   error
}

const (
	stateStart uint8 = iota // before '{'
	stateNext               // after a member
	stateDone
)

// Object returns an iterator over the members of the JSON object that b
// holds (leading whitespace allowed; anything after the closing brace is
// ignored).
func Object(b []byte) Iter {
	return Iter{b: b}
}

// Next returns the next member: its key as raw bytes including the quotes
// (escapes not decoded; see KeyIs and String) and its raw value without
// surrounding whitespace, both sub-slices of the input. ok is false at the
// end of the object or on a syntax error; Err tells which.
func (it *Iter) Next() (key, value []byte, ok bool) {
	b := it.b
	i := skipWS(b, it.i)
	switch it.state {
	case stateStart:
		if i >= len(b) || b[i] != '{' {
			return it.fail()
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			it.state = stateDone
			return nil, nil, false
		}
	case stateNext:
		if i >= len(b) {
			return it.fail()
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			it.state = stateDone
			return nil, nil, false
		default:
			return it.fail()
		}
	case stateDone:
		return nil, nil, false
	}
	if i >= len(b) || b[i] != '"' {
		return it.fail()
	}
	kEnd, ok := skipString(b, i)
	if !ok {
		return it.fail()
	}
	key = b[i:kEnd]
	i = skipWS(b, kEnd)
	if i >= len(b) || b[i] != ':' {
		return it.fail()
	}
	i = skipWS(b, i+1)
	vEnd, ok := skipValue(b, i)
	if !ok {
		return it.fail()
	}
	it.i = vEnd
	it.state = stateNext
	return key, b[i:vEnd], true
}

// Err returns ErrSyntax if iteration stopped on malformed input, else nil.
func (it *Iter) Err() error { return it.err }

func (it *Iter) fail() ([]byte, []byte, bool) {
	it.state = stateDone
	it.err = ErrSyntax
	return nil, nil, false
}

// Find returns the raw value of the last member of the object in b whose
// key equals name, as encoding/json does for duplicate keys.
func Find(b []byte, name string) (value []byte, ok bool) {
	it := Object(b)
	for k, v, more := it.Next(); more; k, v, more = it.Next() {
		if KeyIs(k, name) {
			value, ok = v, true
		}
	}
	return value, ok
}

// KeyIs reports whether the raw key (as returned by Iter.Next, quotes
// included) decodes to name.
func KeyIs(rawKey []byte, name string) bool {
	if len(rawKey) < 2 {
		return false
	}
	inner := rawKey[1 : len(rawKey)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	s, ok := String(rawKey)
	return ok && s == name
}

// String decodes a raw JSON string value (quotes included). Strings without
// escapes and with valid UTF-8 are converted directly; others go through
// encoding/json, so the result always matches it.
func String(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) && !hasControl(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// Bool decodes a raw JSON boolean.
func Bool(raw []byte) (v, ok bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// Uint decodes a raw JSON number that is a non-negative integer fitting in
// an int64 (token counts). Fractions, exponents, negative numbers, null and
// everything else report ok=false.
func Uint(raw []byte) (int64, bool) {
	if len(raw) == 0 || len(raw) > 19 {
		return 0, false
	}
	if raw[0] == '0' && len(raw) > 1 {
		return 0, false
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n < 0 {
			return 0, false
		}
	}
	return n, true
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i]=='"'.
func skipString(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, false
		}
		q := j + k
		// The quote is escaped iff an odd number of backslashes precede it.
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		return skipContainer(b, i)
	case ',', ':', '}', ']':
		return 0, false
	}
	// A number or literal: it ends at the next delimiter.
	j := i
	for j < len(b) {
		c := b[j]
		if c == ',' || c == '}' || c == ']' || isWS(c) {
			break
		}
		if c == '"' || c == '{' || c == '[' || c == ':' {
			return 0, false
		}
		j++
	}
	return j, true
}

// structural marks the bytes skipContainer must look at.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// skipContainer returns the index just past the object or array starting at
// b[i]. It tracks nesting depth, not bracket kinds: a mismatched bracket in
// invalid input only changes where the value is taken to end.
func skipContainer(b []byte, i int) (int, bool) {
	depth := 0
	for j := i; j < len(b); j++ {
		c := b[j]
		if !structural[c] {
			continue
		}
		switch c {
		case '"':
			e, ok := skipString(b, j)
			if !ok {
				return 0, false
			}
			j = e - 1
		case '{', '[':
			depth++
		default:
			depth--
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}
