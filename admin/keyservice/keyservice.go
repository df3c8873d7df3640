// Package keyservice owns the admin service's internal gRPC KeyService
// (proto/ccproxy/keyservice/v1): extproc's only way to look access keys up,
// so the data path holds no database credentials. It answers by key hash
// from internal/store and returns the Bedrock credential still encrypted.
//
// Invalidation is the other half of the contract: after changing a key, its
// user or a credential, the admin service calls the Publisher of
// extproc/keyservice, which deletes the shared Redis entries and tells every
// extproc instance over Redis pub/sub.
package keyservice

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// DefaultCacheTTL is the cache_ttl the server hands out when Options leaves
// it zero. Invalidation is pushed, so it only bounds how long a lost
// invalidation message can go unnoticed.
const DefaultCacheTTL = 30 * time.Second

// Options configures a Server.
type Options struct {
	// CacheTTL is returned as every answer's cache_ttl (default
	// DefaultCacheTTL).
	CacheTTL time.Duration
	// Logger receives lookup failures; nil discards them.
	Logger *slog.Logger
}

// Server implements keyservicev1.KeyServiceServer over a store.
type Server struct {
	keyservicev1.UnimplementedKeyServiceServer
	store *store.Store
	opts  Options
}

// NewServer returns a KeyService answering from st.
func NewServer(st *store.Store, opts Options) *Server {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{store: st, opts: opts}
}

// Register registers s on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	keyservicev1.RegisterKeyServiceServer(g, s)
}

// LookupKey implements keyservicev1.KeyServiceServer. An unknown hash is
// NOT_FOUND; a hash of the wrong length is INVALID_ARGUMENT; revoked and
// rotating keys and disabled users are answered, with their status, so the
// caller can cache the refusal.
func (s *Server) LookupKey(ctx context.Context, req *keyservicev1.LookupKeyRequest) (*keyservicev1.LookupKeyResponse, error) {
	if len(req.GetKeyHash()) != keys.HashLen {
		return nil, status.Errorf(codes.InvalidArgument, "key_hash must be %d bytes", keys.HashLen)
	}
	l, err := s.store.AccessKeys().LookupByHash(ctx, req.GetKeyHash())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "unknown access key")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.opts.Logger.ErrorContext(ctx, "key lookup failed", "err", err)
		return nil, status.Error(codes.Unavailable, "key lookup failed")
	}
	return s.response(l), nil
}

func (s *Server) response(l store.KeyLookup) *keyservicev1.LookupKeyResponse {
	resp := &keyservicev1.LookupKeyResponse{
		KeyId:           l.Key.ID.String(),
		UserId:          l.User.ID.String(),
		KeyPrefix:       l.Key.Prefix,
		RoutingStrategy: string(l.RoutingStrategy()),
		UserDisabled:    l.User.DeletedAt != nil || l.User.Status != store.UserActive,
		CacheTtl:        durationpb.New(s.opts.CacheTTL),
	}
	switch l.Key.Status {
	case store.KeyActive:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_ACTIVE
	case store.KeyRotating:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_ROTATING
		if l.Key.GraceUntil != nil {
			resp.ExpiresAt = timestamppb.New(*l.Key.GraceUntil)
		}
	case store.KeyRevoked:
		resp.Status = keyservicev1.KeyStatus_KEY_STATUS_REVOKED
		if l.Key.RevokedAt != nil {
			resp.RevokedAt = timestamppb.New(*l.Key.RevokedAt)
		}
	}
	if l.User.MonthlyBudgetUSD != nil {
		resp.MonthlyBudgetUsd = l.User.MonthlyBudgetUSD.String()
	}
	if c := l.Credential; c != nil {
		resp.BedrockCredential = &keyservicev1.BedrockCredential{
			CredentialId:     c.ID.String(),
			Kind:             string(c.Kind),
			Region:           c.Region,
			SecretCiphertext: c.SecretCiphertext,
		}
	}
	return resp
}
