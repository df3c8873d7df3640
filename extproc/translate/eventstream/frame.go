package eventstream

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	// preludeLen is the total length, headers length and prelude CRC.
	preludeLen = 12
	// minFrameLen is a frame with no headers and no payload.
	minFrameLen = preludeLen + 4
	// MaxFrameLen bounds the bytes buffered for one frame. Bedrock chunk
	// frames are a few hundred bytes; anything near this is corruption, and
	// the bound keeps a hostile length from making us buffer without limit.
	MaxFrameLen = 16 << 20
)

// Header value types from the event-stream specification.
const (
	typeTrue = iota
	typeFalse
	typeByte
	typeShort
	typeInt
	typeLong
	typeBytes
	typeString
	typeTimestamp
	typeUUID
)

// checkPrelude validates the 12-byte prelude at the start of b and returns
// the frame's total length.
func checkPrelude(b []byte) (int, error) {
	total := binary.BigEndian.Uint32(b[0:4])
	hlen := binary.BigEndian.Uint32(b[4:8])
	if got, want := crc32.ChecksumIEEE(b[:8]), binary.BigEndian.Uint32(b[8:12]); got != want {
		return 0, fmt.Errorf("%w: prelude CRC mismatch", ErrCorrupt)
	}
	if total < minFrameLen || total > MaxFrameLen {
		return 0, fmt.Errorf("%w: frame length %d outside [%d, %d]", ErrCorrupt, total, minFrameLen, MaxFrameLen)
	}
	if hlen > total-minFrameLen {
		return 0, fmt.Errorf("%w: headers length %d exceeds frame length %d", ErrCorrupt, hlen, total)
	}
	return int(total), nil
}

// splitFrame checks the message CRC of a whole frame (whose prelude passed
// checkPrelude) and returns its headers and payload, both aliasing f.
func splitFrame(f []byte) (headers, payload []byte, err error) {
	n := len(f)
	if got, want := crc32.ChecksumIEEE(f[:n-4]), binary.BigEndian.Uint32(f[n-4:]); got != want {
		return nil, nil, fmt.Errorf("%w: message CRC mismatch", ErrCorrupt)
	}
	hend := preludeLen + int(binary.BigEndian.Uint32(f[4:8]))
	return f[preludeLen:hend], f[hend : n-4], nil
}

// nextHeader decodes the header at the start of h. For string and bytes
// headers, value is the value's bytes; for the other types it is the raw
// fixed-size encoding (empty for booleans). rest is what follows.
func nextHeader(h []byte) (name []byte, typ byte, value, rest []byte, err error) {
	if len(h) < 1 {
		return nil, 0, nil, nil, fmt.Errorf("%w: truncated header", ErrCorrupt)
	}
	nl := int(h[0])
	if len(h) < 1+nl+1 {
		return nil, 0, nil, nil, fmt.Errorf("%w: truncated header name", ErrCorrupt)
	}
	name = h[1 : 1+nl]
	typ = h[1+nl]
	h = h[2+nl:]
	var size int
	switch typ {
	case typeTrue, typeFalse:
		size = 0
	case typeByte:
		size = 1
	case typeShort:
		size = 2
	case typeInt:
		size = 4
	case typeLong, typeTimestamp:
		size = 8
	case typeUUID:
		size = 16
	case typeBytes, typeString:
		if len(h) < 2 {
			return nil, 0, nil, nil, fmt.Errorf("%w: truncated header value length", ErrCorrupt)
		}
		size = int(binary.BigEndian.Uint16(h))
		h = h[2:]
	default:
		return nil, 0, nil, nil, fmt.Errorf("%w: unknown header value type %d", ErrCorrupt, typ)
	}
	if len(h) < size {
		return nil, 0, nil, nil, fmt.Errorf("%w: truncated header value", ErrCorrupt)
	}
	return name, typ, h[:size], h[size:], nil
}
