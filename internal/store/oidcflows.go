package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// OIDCFlow is an OpenID Connect login in progress: what the callback needs
// to finish it.
type OIDCFlow struct {
	// StateHash is SHA-256 of the state parameter sent to the provider.
	StateHash []byte
	// BrowserHash is SHA-256 of the token in the browser's flow cookie:
	// the callback must come from the browser that started the flow.
	BrowserHash []byte
	// Nonce is the nonce the ID token must carry.
	Nonce string
	// CodeVerifier is the PKCE code verifier.
	CodeVerifier string
	ExpiresAt    time.Time
}

// OIDCFlows is the repository of OpenID Connect logins in progress. They
// are kept in Postgres so that the callback may reach any admin replica.
type OIDCFlows struct{ q *Queries }

// OIDCFlows returns the OpenID Connect flow repository.
func (q *Queries) OIDCFlows() OIDCFlows { return OIDCFlows{q} }

// ErrTooManyFlows refuses a flow while the limit of unexpired flows is
// reached.
var ErrTooManyFlows = errors.New("store: too many sign-ins in progress")

// Create stores f unless limit unexpired flows exist already
// (ErrTooManyFlows): starting a flow needs no credentials, so the table's
// size is bounded, not the rate of sign-ins.
func (r OIDCFlows) Create(ctx context.Context, f OIDCFlow, now time.Time, limit int) error {
	if len(f.StateHash) != 32 || len(f.BrowserHash) != 32 || f.Nonce == "" || f.CodeVerifier == "" {
		return invalidf("an OIDC flow needs 32-byte hashes, a nonce and a code verifier")
	}
	tag, err := r.q.db.Exec(ctx, `INSERT INTO admin_oidc_flows (state_hash, browser_hash, nonce, code_verifier, expires_at)
		SELECT $1, $2, $3, $4, $5
		WHERE (SELECT count(*) FROM (SELECT 1 FROM admin_oidc_flows WHERE expires_at > $6 LIMIT $7) AS pending) < $7`,
		f.StateHash, f.BrowserHash, f.Nonce, f.CodeVerifier, f.ExpiresAt, now, limit)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrTooManyFlows
	}
	return mapErr("store: create oidc flow", err)
}

// Take deletes and returns the unexpired flow of stateHash: a flow is
// taken at most once, whatever the callback's outcome. An unknown, taken
// or expired flow is ErrNotFound.
func (r OIDCFlows) Take(ctx context.Context, stateHash []byte, now time.Time) (OIDCFlow, error) {
	var f OIDCFlow
	err := r.q.db.QueryRow(ctx, `DELETE FROM admin_oidc_flows WHERE state_hash = $1
		RETURNING state_hash, browser_hash, nonce, code_verifier, expires_at`, stateHash).Scan(
		&f.StateHash, &f.BrowserHash, &f.Nonce, &f.CodeVerifier, &f.ExpiresAt)
	if err == nil && !f.ExpiresAt.After(now) {
		err = pgx.ErrNoRows
	}
	return f, mapErr("store: take oidc flow", err)
}

// DeleteExpired removes flows that expired before cutoff and returns how
// many.
func (r OIDCFlows) DeleteExpired(ctx context.Context, cutoff time.Time) (int, error) {
	tag, err := r.q.db.Exec(ctx, `DELETE FROM admin_oidc_flows WHERE expires_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr("store: delete expired oidc flows", err)
	}
	return int(tag.RowsAffected()), nil
}
