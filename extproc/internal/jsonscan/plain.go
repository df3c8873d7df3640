package jsonscan

import "encoding/binary"

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// PlainPrefix returns how many leading bytes of b, in whole 8-byte words,
// hold no '"', no '\\' and no control character: bytes a JSON string
// scanner can skip without looking at them one by one. Claude Code bodies
// and Bedrock chunk payloads are mostly long strings, and the byte-wise
// scan was the translators' hot spot.
func PlainPrefix(b []byte) int {
	i := 0
	for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
		i += 8
	}
	return i
}

// special8 reports whether any byte of w is '"', '\\' or below 0x20: the
// "has zero byte" trick on w^'"' and w^'\\', and the "has byte less than"
// trick for 0x20; both are exact for existence.
func special8(w uint64) bool {
	q := w ^ (ones * '"')
	e := w ^ (ones * '\\')
	return ((q-ones)&^q|(e-ones)&^e|(w-ones*0x20)&^w)&highs != 0
}
