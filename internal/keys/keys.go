// Package keys owns developer access keys: their format, generation, parsing
// of untrusted input, the short prefix shown in the dashboard, and the keyed
// hash under which they are stored.
//
// An access key is "ak_" followed by the unpadded base64url encoding of 32
// bytes from crypto/rand. The database never holds a key itself, only
// HMAC-SHA256(server secret, key), so a leaked database does not yield usable
// keys, and without the server secret the hashes cannot be brute-forced
// offline any faster than the 256-bit keys themselves.
package keys

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Prefix starts every access key.
const Prefix = "ak_"

const (
	// keyBytes is the number of random bytes in a key.
	keyBytes = 32
	// encodedLen is the length of the base64url part of a key.
	encodedLen = 43 // base64.RawURLEncoding.EncodedLen(keyBytes)
	// keyLen is the length of a whole key.
	keyLen = len(Prefix) + encodedLen
	// displayChars is how many characters after Prefix DisplayPrefix keeps.
	displayChars = 8
)

// MinSecretLen is the minimum length of the server secret given to NewHasher.
const MinSecretLen = 32

// HashLen is the length of the digests returned by Hasher.Hash.
const HashLen = sha256.Size

// ErrMalformed is wrapped by every error Parse returns.
var ErrMalformed = errors.New("keys: malformed access key")

// encoding is the strict form of unpadded base64url: it rejects non-zero
// trailing bits, so every key has exactly one accepted spelling.
var encoding = base64.RawURLEncoding.Strict()

// Generate returns a new random access key.
func Generate() (string, error) {
	var raw [keyBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("keys: read random bytes: %w", err)
	}
	return Prefix + encoding.EncodeToString(raw[:]), nil
}

// Parse validates s, which comes from an untrusted client, and returns it as
// an access key. It accepts exactly Prefix followed by the canonical unpadded
// base64url encoding of 32 bytes. Errors wrap ErrMalformed and never contain
// s, which may be a mistyped secret.
func Parse(s string) (string, error) {
	if len(s) != keyLen {
		return "", fmt.Errorf("%w: want %d characters, got %d", ErrMalformed, keyLen, len(s))
	}
	if !strings.HasPrefix(s, Prefix) {
		return "", fmt.Errorf("%w: missing %q prefix", ErrMalformed, Prefix)
	}
	body := s[len(Prefix):]
	// The base64 decoder silently skips '\r' and '\n', so check the alphabet
	// first rather than trusting the decoder to reject everything else.
	for i := 0; i < len(body); i++ {
		if !isURLAlphabet(body[i]) {
			return "", fmt.Errorf("%w: invalid character at offset %d", ErrMalformed, len(Prefix)+i)
		}
	}
	var raw [keyBytes + 3]byte // room for the decoder to report a wrong length
	n, err := encoding.Decode(raw[:], []byte(body))
	if err != nil {
		return "", fmt.Errorf("%w: not canonical base64url", ErrMalformed)
	}
	if n != keyBytes {
		return "", fmt.Errorf("%w: decodes to %d bytes, want %d", ErrMalformed, n, keyBytes)
	}
	return s, nil
}

func isURLAlphabet(c byte) bool {
	switch {
	case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		return true
	}
	return false
}

// DisplayPrefix returns the part of key kept in the database for display:
// Prefix and the first 8 characters after it. Eight base64url characters
// carry 48 bits, enough for an admin to tell keys apart and far too few to
// help guess the remaining 208.
func DisplayPrefix(key string) string {
	body := strings.TrimPrefix(key, Prefix)
	if len(body) > displayChars {
		body = body[:displayChars]
	}
	return Prefix + body
}

// Hasher computes the stored form of access keys: HMAC-SHA256 under the
// server secret. A Hasher is safe for concurrent use.
type Hasher struct {
	// pool holds *hashState values keyed with the secret, so Hash neither
	// shares mutable state between goroutines nor rederives the HMAC pads
	// per call.
	pool sync.Pool
}

// hashState is one goroutine's HMAC state plus scratch space that saves
// converting the key string to a fresh []byte on every call.
type hashState struct {
	mac hash.Hash
	buf []byte
}

// NewHasher returns a Hasher keyed with secret, which must be at least
// MinSecretLen bytes. The secret is copied.
func NewHasher(secret []byte) (*Hasher, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("keys: server secret is %d bytes, want at least %d", len(secret), MinSecretLen)
	}
	key := append([]byte(nil), secret...)
	h := &Hasher{}
	h.pool.New = func() any {
		return &hashState{mac: hmac.New(sha256.New, key), buf: make([]byte, 0, keyLen)}
	}
	return h, nil
}

// Hash returns the HashLen-byte HMAC-SHA256 of key under the server secret.
func (h *Hasher) Hash(key string) []byte {
	st := h.pool.Get().(*hashState)
	st.mac.Reset()
	st.buf = append(st.buf[:0], key...)
	st.mac.Write(st.buf)
	sum := st.mac.Sum(make([]byte, 0, HashLen))
	if cap(st.buf) > 4*keyLen {
		// Don't let one huge untrusted input pin memory in the pool.
		st.buf = make([]byte, 0, keyLen)
	}
	h.pool.Put(st)
	return sum
}

// Derive returns a HashLen-byte key for purpose, derived from the server
// secret, so that other uses of the secret (a MAC over cache entries, say)
// never share a key with access-key hashing. The input cannot be an access
// key (Parse refuses the NUL byte), so a derived key is never a key's hash.
func (h *Hasher) Derive(purpose string) []byte {
	return h.Hash("ccproxy-derive\x00" + purpose)
}

// Equal reports whether a and b are equal, in time that depends only on their
// lengths.
func Equal(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}
