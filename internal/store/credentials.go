package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// BedrockCredential is how the gateway authenticates to Bedrock for a user,
// or for one of the user's keys (an override).
type BedrockCredential struct {
	ID     uuid.UUID
	UserID uuid.UUID
	// AccessKeyID is set for a per-key override, nil for the user's default.
	AccessKeyID *uuid.UUID
	Kind        CredentialKind
	// Region is the AWS region of the Bedrock runtime endpoint.
	Region string
	// SecretCiphertext is the envelope-encrypted Bedrock API key
	// (internal/secrets) for CredentialAPIKey, nil otherwise. Never returned
	// by the API, never logged.
	SecretCiphertext []byte
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// CredentialInput is the content of a credential to store.
type CredentialInput struct {
	Kind             CredentialKind
	Region           string
	SecretCiphertext []byte
}

func (in CredentialInput) validate() error {
	if !in.Kind.Valid() {
		return invalidf("credential kind %q", in.Kind)
	}
	if in.Kind == CredentialAPIKey && len(in.SecretCiphertext) == 0 {
		return invalidf("an api_key credential needs its encrypted key")
	}
	if in.Kind != CredentialAPIKey && in.SecretCiphertext != nil {
		return invalidf("a %s credential stores no secret", in.Kind)
	}
	if in.Region == "" {
		return invalidf("empty region")
	}
	return nil
}

// Credentials is the Bedrock credential repository.
type Credentials struct{ q *Queries }

// Credentials returns the Bedrock credential repository.
func (q *Queries) Credentials() Credentials { return Credentials{q} }

const credentialColumns = `id, user_id, access_key_id, kind, region, secret_ciphertext, created_at, updated_at`

func scanCredential(row pgx.Row) (BedrockCredential, error) {
	var c BedrockCredential
	err := row.Scan(&c.ID, &c.UserID, &c.AccessKeyID, &c.Kind, &c.Region, &c.SecretCiphertext, &c.CreatedAt, &c.UpdatedAt)
	return c, err
}

// PutForUser creates or replaces a user's default credential. The user must
// exist and not be deleted (else ErrNotFound).
func (r Credentials) PutForUser(ctx context.Context, userID uuid.UUID, in CredentialInput) (BedrockCredential, error) {
	if err := in.validate(); err != nil {
		return BedrockCredential{}, err
	}
	c, err := scanCredential(r.q.db.QueryRow(ctx, `
		INSERT INTO bedrock_credentials (user_id, kind, region, secret_ciphertext)
		SELECT id, $2, $3, $4 FROM users WHERE id = $1 AND deleted_at IS NULL
		ON CONFLICT (user_id) WHERE access_key_id IS NULL
		DO UPDATE SET kind = EXCLUDED.kind, region = EXCLUDED.region, secret_ciphertext = EXCLUDED.secret_ciphertext
		RETURNING `+credentialColumns, userID, in.Kind, in.Region, in.SecretCiphertext))
	return c, mapErr("store: put user bedrock credential", err)
}

// PutForKey creates or replaces a key's override credential. The key must
// exist, not be revoked, and belong to a user not deleted (else ErrNotFound).
func (r Credentials) PutForKey(ctx context.Context, keyID uuid.UUID, in CredentialInput) (BedrockCredential, error) {
	if err := in.validate(); err != nil {
		return BedrockCredential{}, err
	}
	c, err := scanCredential(r.q.db.QueryRow(ctx, `
		INSERT INTO bedrock_credentials (user_id, access_key_id, kind, region, secret_ciphertext)
		SELECT k.user_id, k.id, $2, $3, $4
		FROM access_keys k JOIN users u ON u.id = k.user_id
		WHERE k.id = $1 AND k.status <> 'revoked' AND u.deleted_at IS NULL
		ON CONFLICT (access_key_id) WHERE access_key_id IS NOT NULL
		DO UPDATE SET kind = EXCLUDED.kind, region = EXCLUDED.region, secret_ciphertext = EXCLUDED.secret_ciphertext
		RETURNING `+credentialColumns, keyID, in.Kind, in.Region, in.SecretCiphertext))
	return c, mapErr("store: put key bedrock credential", err)
}

// GetForUser returns a user's default credential.
func (r Credentials) GetForUser(ctx context.Context, userID uuid.UUID) (BedrockCredential, error) {
	c, err := scanCredential(r.q.db.QueryRow(ctx, `SELECT `+credentialColumns+
		` FROM bedrock_credentials WHERE user_id = $1 AND access_key_id IS NULL`, userID))
	return c, mapErr("store: get user bedrock credential", err)
}

// GetForKey returns a key's override credential (not the user's default;
// AccessKeys.LookupByHash resolves the effective one).
func (r Credentials) GetForKey(ctx context.Context, keyID uuid.UUID) (BedrockCredential, error) {
	c, err := scanCredential(r.q.db.QueryRow(ctx, `SELECT `+credentialColumns+
		` FROM bedrock_credentials WHERE access_key_id = $1`, keyID))
	return c, mapErr("store: get key bedrock credential", err)
}

// DeleteForUser removes a user's default credential (ErrNotFound if none).
func (r Credentials) DeleteForUser(ctx context.Context, userID uuid.UUID) error {
	return r.delete(ctx, "store: delete user bedrock credential",
		`DELETE FROM bedrock_credentials WHERE user_id = $1 AND access_key_id IS NULL`, userID)
}

// DeleteForKey removes a key's override credential (ErrNotFound if none).
func (r Credentials) DeleteForKey(ctx context.Context, keyID uuid.UUID) error {
	return r.delete(ctx, "store: delete key bedrock credential",
		`DELETE FROM bedrock_credentials WHERE access_key_id = $1`, keyID)
}

func (r Credentials) delete(ctx context.Context, op, sql string, id uuid.UUID) error {
	tag, err := r.q.db.Exec(ctx, sql, id)
	if err != nil {
		return mapErr(op, err)
	}
	if tag.RowsAffected() == 0 {
		return mapErr(op, pgx.ErrNoRows)
	}
	return nil
}

// RegionsInUse returns the distinct regions of the credentials of users not
// deleted, sorted: the Bedrock endpoints the control plane must serve.
func (r Credentials) RegionsInUse(ctx context.Context) ([]string, error) {
	rows, err := r.q.db.Query(ctx, `
		SELECT DISTINCT c.region FROM bedrock_credentials c
		JOIN users u ON u.id = c.user_id
		WHERE u.deleted_at IS NULL
		ORDER BY 1`)
	if err != nil {
		return nil, mapErr("store: regions in use", err)
	}
	regions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return regions, mapErr("store: regions in use", err)
}
