package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
)

// CheckHostPort reports whether v is host:port with a numeric port from 0
// to 65535; its error is the message settings show for a bad address.
func CheckHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// decodeSecret accepts base64 (standard or URL, padded or not), hex, or raw
// text, and returns the bytes the encoding yields. Raw text is accepted so
// that `openssl rand -base64 48` output works either way.
func decodeSecret(v string) []byte {
	if b, err := decodeKeyBytes(v); err == nil {
		return b
	}
	return []byte(v)
}

func decodeKey32(v string) ([]byte, error) {
	b, err := decodeKeyBytes(v)
	if err != nil || len(b) != 32 {
		return nil, errors.New("must be exactly 32 bytes encoded as base64 or hex (e.g. `openssl rand -base64 32`)")
	}
	return b, nil
}

func decodeKeyBytes(v string) ([]byte, error) {
	if len(v)%2 == 0 {
		if b, err := hex.DecodeString(v); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64 or hex")
}
