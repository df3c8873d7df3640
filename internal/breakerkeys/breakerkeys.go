// Package breakerkeys owns the Redis key layout of the per-access-key Plan
// circuit breaker: extproc/planbreaker keeps the state under these keys,
// and the admin service reads them to notify administrators of breakers
// that stay open (admin/notifications). The layout (all keys of one access
// key share the Redis Cluster hash slot of its id):
//
//	<prefix>breaker:{<keyID>}:open   hash    field "until" = open-until (unix ms), "exp"
//	<prefix>breaker:{<keyID>}:fail   zset    one member per failure, score = its time (unix ms)
//	<prefix>breaker:{<keyID>}:probe  string  the probe lease's expiry (unix ms)
package breakerkeys

import (
	"strings"

	"github.com/google/uuid"
)

// UntilField is the field of the open hash holding open-until, in Unix
// milliseconds.
const UntilField = "until"

// Base is the common start of an access key's breaker keys; append
// "open", "fail" or "probe".
func Base(prefix string, keyID uuid.UUID) string {
	return prefix + "breaker:{" + keyID.String() + "}:"
}

// Open is the key of an access key's open hash, which exists while its
// breaker is open or half-open.
func Open(prefix string, keyID uuid.UUID) string { return Base(prefix, keyID) + "open" }

// OpenPattern matches every open hash (a SCAN MATCH pattern).
func OpenPattern(prefix string) string { return prefix + "breaker:{*}:open" }

// ParseOpen returns the access key id of an open hash's key.
func ParseOpen(prefix, key string) (uuid.UUID, bool) {
	inner, ok := strings.CutPrefix(key, prefix+"breaker:{")
	if !ok {
		return uuid.Nil, false
	}
	idText, ok := strings.CutSuffix(inner, "}:open")
	if !ok {
		return uuid.Nil, false
	}
	id, err := uuid.Parse(idText)
	return id, err == nil
}
