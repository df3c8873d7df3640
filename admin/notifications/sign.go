package notifications

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Request headers of a delivery.
const (
	HeaderEventID   = "X-Ccproxy-Event-Id"
	HeaderEventType = "X-Ccproxy-Event-Type"
	HeaderAttempt   = "X-Ccproxy-Delivery-Attempt"
	HeaderTimestamp = "X-Ccproxy-Timestamp"
	HeaderSignature = "X-Ccproxy-Signature"
	// HeaderIdempotencyKey carries the event id too, under the name
	// generic HTTP receivers deduplicate on.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// SecretPrefix starts every generated signing secret.
const SecretPrefix = "whsec_"

// GenerateSecret returns a new signing secret: SecretPrefix and 32 random
// bytes in base64url.
func GenerateSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Sign returns the X-Ccproxy-Signature value for body sent at ts:
// "v1=" and the lower-case hex HMAC-SHA256, keyed with the secret's bytes
// as the admin sees them, of the decimal Unix seconds of ts, a ".", and the
// body.
func Sign(secret string, ts time.Time, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("notifications: signature does not match")
	ErrStale        = errors.New("notifications: timestamp outside the tolerance")
)

// Verify checks a delivery as a receiver written in Go would: the
// X-Ccproxy-Timestamp value ts must be within tolerance of now (against
// replays), and one of the comma-separated "v1=" entries of the
// X-Ccproxy-Signature value sig must match (several appear while a secret
// is being rotated by the receiver's side).
func Verify(secret, ts, sig string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := mac(secret, ts, body)
	for _, part := range strings.Split(sig, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "v1=")
		if !ok {
			continue
		}
		got, err := hex.DecodeString(v)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}
