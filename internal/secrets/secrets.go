// Package secrets owns envelope encryption of secrets stored in Postgres,
// such as Bedrock API keys.
//
// A Sealer turns a plaintext into a self-describing blob and back. Two kinds
// of blob exist:
//
//   - KMS: each blob gets its own AES-256 data key from AWS KMS
//     GenerateDataKey; the blob carries the key ARN and the KMS-encrypted data
//     key, and Open asks KMS Decrypt for the data key again.
//   - local: AES-256-GCM directly under a 32-byte master key; the blob carries
//     a short id of the master key so that a wrong key is reported as such
//     rather than as corruption.
//
// Every blob is bound to caller-chosen associated data (for example the id of
// the row it is stored in), so a blob copied to another row does not open.
// The associated data is not secret: in KMS mode it is part of the KMS
// encryption context, which CloudTrail records.
//
// Blob layout (all integers big-endian):
//
//	local: version(1)=1 | kind(1)=1 | keyID(8)                            | nonce(12) | ciphertext | tag(16)
//	KMS:   version(1)=1 | kind(1)=2 | len(2) | key ARN | len(2) | data key | nonce(12) | ciphertext | tag(16)
//
// Everything before the nonce is the header; the GCM additional data is the
// header followed by the caller's associated data, so no header byte can
// change without Open failing.
package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sealer encrypts secrets for storage and decrypts them again. Both methods
// are safe for concurrent use.
type Sealer interface {
	// Seal encrypts plaintext, binding the result to aad.
	Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	// Open decrypts a blob made by Seal with the same aad. It returns an
	// error, never garbage, for a blob that was altered, sealed with other
	// associated data or under another key.
	Open(ctx context.Context, blob, aad []byte) ([]byte, error)
}

// Errors returned, wrapped, by Open.
var (
	// ErrMalformed reports a blob that is truncated, has an unknown version
	// or kind, or whose lengths do not add up.
	ErrMalformed = errors.New("secrets: malformed blob")
	// ErrWrongKey reports a blob sealed under a different master key or KMS
	// key than the sealer's.
	ErrWrongKey = errors.New("secrets: blob sealed under a different key")
	// ErrAuthentication reports a blob that fails authentication: it was
	// altered, or is opened with different associated data.
	ErrAuthentication = errors.New("secrets: blob failed authentication")
	// ErrNotConfigured reports a blob of a kind the sealer has no key for,
	// such as a KMS blob given to a sealer with only a master key.
	ErrNotConfigured = errors.New("secrets: no key configured for this kind of blob")
)

const (
	version1  byte = 1
	kindLocal byte = 1
	kindKMS   byte = 2

	keyIDLen   = 8  // bytes of master key id in local blobs
	nonceLen   = 12 // GCM standard nonce
	tagLen     = 16 // GCM tag
	gcmExtra   = nonceLen + tagLen
	dataKeyLen = 32 // AES-256

	// maxARNLen and maxEncryptedKeyLen are the KMS API's own limits on a key
	// ARN (KeyId) and on a CiphertextBlob.
	maxARNLen          = 2048
	maxEncryptedKeyLen = 6144
)

// header is the parsed fixed part of a blob.
type header struct {
	kind         byte
	keyID        []byte // local: master key id
	keyARN       string // KMS: ARN of the key that encrypted the data key
	encryptedKey []byte // KMS: data key encrypted by KMS
	raw          []byte // the header bytes, authenticated as GCM additional data
	sealed       []byte // nonce | ciphertext | tag
}

// parseBlob splits blob into its header and sealed payload, checking only
// structure; it never decrypts. The returned slices alias blob.
func parseBlob(blob []byte) (header, error) {
	if len(blob) < 2 {
		return header{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(blob))
	}
	if blob[0] != version1 {
		return header{}, fmt.Errorf("%w: unknown version %d", ErrMalformed, blob[0])
	}
	h := header{kind: blob[1]}
	rest := blob[2:]
	switch h.kind {
	case kindLocal:
		if len(rest) < keyIDLen {
			return header{}, fmt.Errorf("%w: truncated local header", ErrMalformed)
		}
		h.keyID, rest = rest[:keyIDLen], rest[keyIDLen:]
	case kindKMS:
		arn, rest2, ok := readField(rest, maxARNLen)
		if !ok {
			return header{}, fmt.Errorf("%w: bad KMS key ARN field", ErrMalformed)
		}
		ek, rest3, ok := readField(rest2, maxEncryptedKeyLen)
		if !ok {
			return header{}, fmt.Errorf("%w: bad encrypted data key field", ErrMalformed)
		}
		h.keyARN, h.encryptedKey, rest = string(arn), ek, rest3
	default:
		return header{}, fmt.Errorf("%w: unknown kind %d", ErrMalformed, h.kind)
	}
	if len(rest) < gcmExtra {
		return header{}, fmt.Errorf("%w: truncated ciphertext", ErrMalformed)
	}
	h.raw = blob[:len(blob)-len(rest)]
	h.sealed = rest
	return h, nil
}

// readField reads a length-prefixed, non-empty field of at most max bytes.
func readField(b []byte, max int) (field, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n == 0 || n > max || n > len(b) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// appendField appends a length-prefixed field.
func appendField(dst, field []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(field)))
	return append(dst, field...)
}

// newAEAD returns AES-256-GCM with random nonces under key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// additionalData returns the GCM additional data for a blob: its header and
// then the caller's associated data. The header is self-delimiting, so no two
// different (header, aad) pairs give the same bytes.
func additionalData(hdr, aad []byte) []byte {
	ad := make([]byte, 0, len(hdr)+len(aad))
	return append(append(ad, hdr...), aad...)
}

// seal appends nonce | ciphertext | tag to hdr.
func seal(aead cipher.AEAD, hdr, plaintext, aad []byte) []byte {
	out := make([]byte, len(hdr), len(hdr)+len(plaintext)+gcmExtra)
	copy(out, hdr)
	return aead.Seal(out, nil, plaintext, additionalData(hdr, aad))
}

// open authenticates and decrypts h.sealed.
func open(aead cipher.AEAD, h header, aad []byte) ([]byte, error) {
	pt, err := aead.Open(nil, nil, h.sealed, additionalData(h.raw, aad))
	if err != nil {
		return nil, ErrAuthentication
	}
	return pt, nil
}
