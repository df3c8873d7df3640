// Package storebridge resolves access keys straight from Postgres: an
// auth.KeyStore over internal/store, for tests and tools that run the
// ext_proc router without the admin service.
//
// ccproxy's own commands never use it: extproc holds no database
// credentials. It resolves keys through the admin service's KeyService
// (extproc/keyservice) and publishes usage to the Redis stream
// (internal/usagestream) that the admin service ingests (admin/ingest),
// which took over the pricing and usage writing this package once did.
package storebridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/internal/store"
)

// KeyStore adapts *store.Store to auth.KeyStore.
type KeyStore struct {
	Store *store.Store
	// Now is the clock used to judge rotation grace periods; nil means time.Now.
	Now func() time.Time
}

// LookupKeyByHash implements auth.KeyStore.
func (k KeyStore) LookupKeyByHash(ctx context.Context, hash []byte) (auth.KeyRecord, error) {
	l, err := k.Store.AccessKeys().LookupByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return auth.KeyRecord{}, fmt.Errorf("storebridge: %w", auth.ErrUnknownKey)
	}
	if err != nil {
		return auth.KeyRecord{}, fmt.Errorf("storebridge: look up key: %w", err)
	}
	rec := auth.KeyRecord{
		KeyID:           l.Key.ID,
		UserID:          l.User.ID,
		Prefix:          l.Key.Prefix,
		RoutingStrategy: string(l.RoutingStrategy()),
		UserDisabled:    l.User.DeletedAt != nil || l.User.Status != store.UserActive,
	}
	if c := l.Credential; c != nil {
		rec.Credential = &auth.BedrockCredential{ID: c.ID, Kind: string(c.Kind), Region: c.Region, SecretCiphertext: c.SecretCiphertext}
	}
	switch l.Key.Status {
	case store.KeyRevoked:
		rec.RevokedAt = time.Unix(0, 0).UTC()
		if l.Key.RevokedAt != nil {
			rec.RevokedAt = *l.Key.RevokedAt
		}
	case store.KeyRotating:
		// A rotating key without a grace deadline is already unusable.
		rec.ExpiresAt = time.Unix(0, 0).UTC()
		if l.Key.GraceUntil != nil {
			rec.ExpiresAt = *l.Key.GraceUntil
		}
	}
	return rec, nil
}
