package eventstream

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func putBE32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }

func crcIEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
