package secrets

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// MasterKeyLen is the length of a local master key.
const MasterKeyLen = 32

// keyIDLabel separates the master key id from any other hash of the key.
const keyIDLabel = "ccproxy secrets master key id v1\x00"

// Local seals with AES-256-GCM under a local master key. Each Seal uses a
// fresh random nonce; a master key must not seal more than 2^32 blobs, far
// beyond the number of stored credentials.
type Local struct {
	aead  cipher.AEAD
	keyID [keyIDLen]byte
}

// NewLocal returns a Local sealer for a MasterKeyLen-byte master key. It
// keeps no reference to masterKey.
func NewLocal(masterKey []byte) (*Local, error) {
	if len(masterKey) != MasterKeyLen {
		return nil, fmt.Errorf("secrets: master key is %d bytes, want %d", len(masterKey), MasterKeyLen)
	}
	aead, err := newAEAD(masterKey)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	l := &Local{aead: aead}
	sum := sha256.Sum256(append([]byte(keyIDLabel), masterKey...))
	copy(l.keyID[:], sum[:])
	return l, nil
}

// KeyID returns, in hex, the short non-secret id of the master key that l
// records in the blobs it seals, for diagnostics.
func (l *Local) KeyID() string { return hex.EncodeToString(l.keyID[:]) }

// Seal encrypts plaintext under the master key, bound to aad.
func (l *Local) Seal(_ context.Context, plaintext, aad []byte) ([]byte, error) {
	hdr := make([]byte, 0, 2+keyIDLen)
	hdr = append(hdr, version1, kindLocal)
	hdr = append(hdr, l.keyID[:]...)
	return seal(l.aead, hdr, plaintext, aad), nil
}

// Open decrypts a local blob sealed under the same master key and aad. A KMS
// blob fails with ErrNotConfigured.
func (l *Local) Open(_ context.Context, blob, aad []byte) ([]byte, error) {
	h, err := parseBlob(blob)
	if err != nil {
		return nil, err
	}
	if h.kind == kindKMS {
		return nil, fmt.Errorf("%w: blob was sealed with AWS KMS key %s but only a master key is configured; configure the KMS key id", ErrNotConfigured, h.keyARN)
	}
	return l.open(h, aad)
}

func (l *Local) open(h header, aad []byte) ([]byte, error) {
	if !bytes.Equal(h.keyID, l.keyID[:]) {
		return nil, fmt.Errorf("%w: blob was sealed under master key id %x, the configured master key has id %x", ErrWrongKey, h.keyID, l.keyID)
	}
	return open(l.aead, h, aad)
}
