// Package bedrockauth applies a user's Bedrock credential to an outgoing
// InvokeModel (or CountTokens) request: it decrypts Bedrock API keys sealed by
// the admin service and keeps them briefly in memory, and signs requests with
// SigV4 using the ambient AWS credential chain.
//
// It owns no network calls of its own apart from those the AWS credential
// chain and the secrets.Sealer make; the caller sets the returned headers on
// the upstream request.
package bedrockauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/secrets"
)

// Credential kinds, as the KeyService sends them.
const (
	KindAPIKey          = "api_key"
	KindAWSDefaultChain = "aws_default_chain"
)

// SigningService is the SigV4 service name of Bedrock, both the runtime
// (bedrock-runtime.<region>.amazonaws.com) and the control plane.
const SigningService = "bedrock"

// Defaults for zero Config fields.
const (
	DefaultKeyTTL      = 5 * time.Minute
	DefaultMaxKeys     = 10000
	DefaultOpenTimeout = 5 * time.Second
)

// aadPrefix is the associated data prefix the admin service seals Bedrock API
// keys with; it must stay identical to admin.CredentialAAD, which extproc does
// not import because that would link the admin service and its Postgres store
// into extproc. TestCredentialAADMatchesAdmin pins the two together.
const aadPrefix = "ccproxy/bedrock-credential/user/"

// CredentialAAD is the associated data a Bedrock API key of userID is sealed
// with: "ccproxy/bedrock-credential/user/<uuid>", as admin.CredentialAAD.
func CredentialAAD(userID uuid.UUID) []byte {
	return []byte(aadPrefix + userID.String())
}

// Errors returned, wrapped, by Sign and Check.
var (
	// ErrUnknownKind reports a credential kind other than KindAPIKey and
	// KindAWSDefaultChain.
	ErrUnknownKind = errors.New("bedrockauth: unknown credential kind")
	// ErrInvalidCredential reports a credential missing what its kind needs
	// (a secret for api_key, a region for aws_default_chain).
	ErrInvalidCredential = errors.New("bedrockauth: incomplete credential")
	// ErrDecrypt reports an API key that could not be decrypted.
	ErrDecrypt = errors.New("bedrockauth: cannot decrypt Bedrock API key")
	// ErrAWSCredentials reports that the ambient AWS credential chain gave
	// no usable credentials.
	ErrAWSCredentials = errors.New("bedrockauth: no AWS credentials from the default chain")
	// ErrInvalidPath reports a path that is not an absolute, already escaped
	// request path.
	ErrInvalidPath = errors.New("bedrockauth: invalid request path")
)

// Credential is a Bedrock credential as extproc receives it from the
// KeyService: the secret still sealed.
type Credential struct {
	// ID identifies the credential row.
	ID uuid.UUID
	// UserID is the user the credential belongs to; the sealed secret is
	// bound to it (CredentialAAD).
	UserID uuid.UUID
	// Kind is KindAPIKey or KindAWSDefaultChain.
	Kind string
	// Region is the AWS region requests are sent to and signed for.
	Region string
	// SecretCiphertext is the sealed Bedrock API key for KindAPIKey. Never log it.
	SecretCiphertext []byte
}

// Header is one request header to set, name in lower case.
type Header struct {
	Name, Value string
}

// Config configures a Signer.
type Config struct {
	// Sealer opens sealed API keys. Required for api_key credentials.
	Sealer secrets.Sealer
	// KeyTTL is how long a decrypted API key is kept; DefaultKeyTTL if zero.
	KeyTTL time.Duration
	// MaxKeys bounds the number of decrypted API keys kept; DefaultMaxKeys
	// if zero.
	MaxKeys int
	// OpenTimeout bounds one Sealer.Open (a KMS call); DefaultOpenTimeout
	// if zero.
	OpenTimeout time.Duration
	// AWSCredentials, if set, replaces the default chain (tests, or a
	// caller that already loaded an aws.Config). It is wrapped in an
	// aws.CredentialsCache unless it already is one.
	AWSCredentials aws.CredentialsProvider
	// LoadAWSOptions are passed to config.LoadDefaultConfig when
	// AWSCredentials is nil.
	LoadAWSOptions []func(*config.LoadOptions) error
	// Now is the clock used for SigV4 dates and key expiry; time.Now if nil.
	Now func() time.Time
}

// Signer applies Bedrock credentials to requests. It is safe for concurrent
// use.
type Signer struct {
	sealer      secrets.Sealer
	ttl         time.Duration
	maxKeys     int
	openTimeout time.Duration
	now         func() time.Time
	loadOpts    []func(*config.LoadOptions) error
	v4          *v4.Signer

	awsMu    sync.Mutex
	awsCreds aws.CredentialsProvider // nil until loaded

	mu   sync.Mutex
	keys map[cacheKey]*keyEntry
}

type cacheKey struct {
	id, user uuid.UUID
	blob     [sha256.Size]byte
}

// keyEntry is a decrypted key, or a decryption in flight while ready is open.
type keyEntry struct {
	ready   chan struct{}
	header  string // "Bearer <key>"; set before ready is closed
	err     error  // set before ready is closed
	expires time.Time
}

// New returns a Signer. The AWS default credential chain is loaded on the
// first aws_default_chain request, not here, so that a deployment using only
// API keys never reads AWS configuration.
func New(cfg Config) *Signer {
	s := &Signer{
		sealer:      cfg.Sealer,
		ttl:         cfg.KeyTTL,
		maxKeys:     cfg.MaxKeys,
		openTimeout: cfg.OpenTimeout,
		now:         cfg.Now,
		loadOpts:    cfg.LoadAWSOptions,
		keys:        make(map[cacheKey]*keyEntry),
		// SigV4 for every service but S3 URI-encodes the canonical path
		// once more on top of the wire encoding, so the wire path
		// /model/x-v1%3A0/invoke is signed as /model/x-v1%253A0/invoke;
		// that is what the SDK's own bedrockruntime client signs and what
		// Bedrock checks (signing the single-encoded form is the classic
		// Bedrock 403 for model ids with ':', e.g.
		// https://github.com/higress-group/higress/issues/2396). The
		// path itself is passed verbatim through URL.Opaque, so it is
		// never decoded and re-escaped on the way in.
		v4: v4.NewSigner(),
	}
	if s.ttl <= 0 {
		s.ttl = DefaultKeyTTL
	}
	if s.maxKeys <= 0 {
		s.maxKeys = DefaultMaxKeys
	}
	if s.openTimeout <= 0 {
		s.openTimeout = DefaultOpenTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	if cfg.AWSCredentials != nil {
		s.awsCreds = cached(cfg.AWSCredentials)
	}
	return s
}

func cached(p aws.CredentialsProvider) aws.CredentialsProvider {
	if aws.IsCredentialsProvider(p, (*aws.CredentialsCache)(nil)) {
		return p
	}
	return aws.NewCredentialsCache(p)
}

// Sign returns the headers that authenticate a request to Bedrock: for an
// api_key credential "authorization: Bearer <key>"; for aws_default_chain the
// SigV4 "authorization", "x-amz-date" and, for session credentials,
// "x-amz-security-token". escapedPath is the request path exactly as sent
// (already escaped, optionally with a query), host the Host/:authority the
// upstream receives, and body the final request body. Only host and the
// x-amz-* headers are signed, so proxies may change other headers, but not
// the body.
func (s *Signer) Sign(ctx context.Context, cred Credential, method, host, escapedPath string, body []byte) ([]Header, error) {
	switch cred.Kind {
	case KindAPIKey:
		h, err := s.apiKeyHeader(ctx, cred)
		if err != nil {
			return nil, err
		}
		return []Header{{Name: "authorization", Value: h}}, nil
	case KindAWSDefaultChain:
		return s.sigV4(ctx, cred, method, host, escapedPath, body)
	default:
		return nil, fmt.Errorf("%w %q (credential %s)", ErrUnknownKind, cred.Kind, cred.ID)
	}
}

// Check reports whether cred can be applied to a request: an API key that
// decrypts (and is then cached for Sign), or AWS credentials that the default
// chain provides. The router-level processor calls it to refuse a request
// before routing, so that Sign does not fail later.
func (s *Signer) Check(ctx context.Context, cred Credential) error {
	switch cred.Kind {
	case KindAPIKey:
		_, err := s.apiKeyHeader(ctx, cred)
		return err
	case KindAWSDefaultChain:
		if cred.Region == "" {
			return fmt.Errorf("%w: no region (credential %s)", ErrInvalidCredential, cred.ID)
		}
		_, err := s.awsCredentials(ctx)
		return err
	default:
		return fmt.Errorf("%w %q (credential %s)", ErrUnknownKind, cred.Kind, cred.ID)
	}
}

func (s *Signer) sigV4(ctx context.Context, cred Credential, method, host, escapedPath string, body []byte) ([]Header, error) {
	if cred.Region == "" {
		return nil, fmt.Errorf("%w: no region (credential %s)", ErrInvalidCredential, cred.ID)
	}
	path, query, _ := strings.Cut(escapedPath, "?")
	if !strings.HasPrefix(path, "/") || host == "" {
		return nil, fmt.Errorf("%w: %q on host %q", ErrInvalidPath, escapedPath, host)
	}
	creds, err := s.awsCredentials(ctx)
	if err != nil {
		return nil, err
	}
	// Opaque carries the path verbatim to the signer (see
	// aws/signer/v4 GetURIPath), so %3A stays %3A instead of being
	// decoded and re-escaped. ContentLength stays 0 so that content-length
	// is not signed: Envoy may re-frame the body.
	req := &http.Request{
		Method: method,
		URL:    &url.URL{Scheme: "https", Host: host, Opaque: "//" + host + path, RawQuery: query},
		Host:   host,
		Header: make(http.Header, 4),
	}
	sum := sha256.Sum256(body)
	if err := s.v4.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), SigningService, cred.Region, s.now()); err != nil {
		return nil, fmt.Errorf("bedrockauth: sign request (credential %s): %w", cred.ID, err)
	}
	hs := make([]Header, 0, 3)
	for _, name := range [...]string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := req.Header.Get(name); v != "" {
			hs = append(hs, Header{Name: strings.ToLower(name), Value: v})
		}
	}
	return hs, nil
}

// awsCredentials loads the default chain once and returns credentials from
// its cache. A failed load is not remembered, so that a fixed environment is
// picked up without a restart.
func (s *Signer) awsCredentials(ctx context.Context) (aws.Credentials, error) {
	s.awsMu.Lock()
	p := s.awsCreds
	if p == nil {
		cfg, err := config.LoadDefaultConfig(ctx, s.loadOpts...)
		if err != nil {
			s.awsMu.Unlock()
			return aws.Credentials{}, fmt.Errorf("%w: load AWS configuration: %w", ErrAWSCredentials, err)
		}
		if cfg.Credentials == nil {
			s.awsMu.Unlock()
			return aws.Credentials{}, ErrAWSCredentials
		}
		p = cached(cfg.Credentials)
		s.awsCreds = p
	}
	s.awsMu.Unlock()
	c, err := p.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("%w: %w", ErrAWSCredentials, err)
	}
	return c, nil
}

// apiKeyHeader returns "Bearer <key>" for an api_key credential, decrypting
// it at most once per TTL however many requests ask at the same time.
func (s *Signer) apiKeyHeader(ctx context.Context, cred Credential) (string, error) {
	if len(cred.SecretCiphertext) == 0 {
		return "", fmt.Errorf("%w: no secret (credential %s)", ErrInvalidCredential, cred.ID)
	}
	if s.sealer == nil {
		return "", fmt.Errorf("%w: no sealer configured (credential %s)", ErrDecrypt, cred.ID)
	}
	k := cacheKey{id: cred.ID, user: cred.UserID, blob: sha256.Sum256(cred.SecretCiphertext)}
	now := s.now()

	s.mu.Lock()
	e, ok := s.keys[k]
	if ok {
		select {
		case <-e.ready:
			if now.Before(e.expires) {
				s.mu.Unlock()
				return e.header, nil
			}
			ok = false // expired: decrypt again
		default: // in flight: wait below
		}
	}
	if !ok {
		s.makeRoom(now)
		e = &keyEntry{ready: make(chan struct{})}
		s.keys[k] = e
		s.mu.Unlock()
		s.decrypt(ctx, k, e, cred)
		return e.header, e.err
	}
	s.mu.Unlock()

	select {
	case <-e.ready:
		return e.header, e.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// decrypt fills e and publishes it. The Open runs detached from the caller's
// cancellation (but bounded by openTimeout) because other requests may be
// waiting for its result.
func (s *Signer) decrypt(ctx context.Context, k cacheKey, e *keyEntry, cred Credential) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.openTimeout)
	plain, err := s.sealer.Open(octx, cred.SecretCiphertext, CredentialAAD(cred.UserID))
	cancel()
	if err != nil {
		e.err = fmt.Errorf("%w (credential %s): %w", ErrDecrypt, cred.ID, err)
	} else if len(plain) == 0 {
		e.err = fmt.Errorf("%w (credential %s): empty key", ErrDecrypt, cred.ID)
	} else {
		e.header = "Bearer " + string(plain)
		clear(plain)
	}
	s.mu.Lock()
	if e.err != nil {
		// Failures are not cached: the next request tries again.
		if s.keys[k] == e {
			delete(s.keys, k)
		}
	} else {
		e.expires = s.now().Add(s.ttl)
	}
	close(e.ready)
	s.mu.Unlock()
}

// makeRoom keeps the cache under maxKeys: expired entries go first, then
// arbitrary ready ones (map order), which is enough for a cache whose
// misses cost one decryption. s.mu is held.
func (s *Signer) makeRoom(now time.Time) {
	if len(s.keys) < s.maxKeys {
		return
	}
	for k, e := range s.keys {
		select {
		case <-e.ready:
			if !now.Before(e.expires) {
				delete(s.keys, k)
			}
		default:
		}
	}
	for k, e := range s.keys {
		if len(s.keys) < s.maxKeys {
			return
		}
		select {
		case <-e.ready:
			delete(s.keys, k)
		default:
		}
	}
}
