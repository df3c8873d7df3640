package keyservice

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"context"
	"net"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

func TestLookupKeyOverGRPC(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(st, Options{CacheTTL: 7 * time.Second}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := keyservicev1.NewKeyServiceClient(conn)

	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	budget := decimal.RequireFromString("12.50")
	user, err := st.Users().Create(ctx, store.NewUser{Name: "ada", RoutingStrategy: store.BedrockOnly, MonthlyBudgetUSD: &budget})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := st.Credentials().PutForUser(ctx, user.ID, store.CredentialInput{Kind: store.CredentialAPIKey, Region: "us-east-1", SecretCiphertext: []byte("sealed")})
	if err != nil {
		t.Fatal(err)
	}
	newKey := func() (string, store.AccessKey) {
		k, _ := keys.Generate()
		ak, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: user.ID, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
		if err != nil {
			t.Fatal(err)
		}
		return k, ak
	}
	active, activeRow := newKey()
	revoked, revokedRow := newKey()
	revokedRow, err = st.AccessKeys().Revoke(ctx, revokedRow.ID)
	if err != nil {
		t.Fatal(err)
	}
	rotating, rotatingRow := newKey()
	replacement, _ := keys.Generate()
	rotatingRow, _, err = st.AccessKeys().Rotate(ctx, rotatingRow.ID, hasher.Hash(replacement), keys.DisplayPrefix(replacement), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _ := keys.Generate()

	base := func(k string, row store.AccessKey) *keyservicev1.LookupKeyResponse {
		return &keyservicev1.LookupKeyResponse{
			KeyId:            row.ID.String(),
			UserId:           user.ID.String(),
			KeyPrefix:        keys.DisplayPrefix(k),
			RoutingStrategy:  "bedrock_only",
			MonthlyBudgetUsd: "12.5",
			BedrockCredential: &keyservicev1.BedrockCredential{
				CredentialId: cred.ID.String(), Kind: "api_key", Region: "us-east-1", SecretCiphertext: []byte("sealed"),
			},
			CacheTtl: durationpb.New(7 * time.Second),
		}
	}
	wantActive := base(active, activeRow)
	wantActive.Status = keyservicev1.KeyStatus_KEY_STATUS_ACTIVE
	wantRevoked := base(revoked, revokedRow)
	wantRevoked.Status = keyservicev1.KeyStatus_KEY_STATUS_REVOKED
	wantRevoked.RevokedAt = timestamppb.New(*revokedRow.RevokedAt)
	wantRotating := base(rotating, rotatingRow)
	wantRotating.Status = keyservicev1.KeyStatus_KEY_STATUS_ROTATING
	wantRotating.ExpiresAt = timestamppb.New(*rotatingRow.GraceUntil)

	for _, tc := range []struct {
		name string
		hash []byte
		want *keyservicev1.LookupKeyResponse
		code codes.Code
	}{
		{"active", hasher.Hash(active), wantActive, codes.OK},
		{"revoked", hasher.Hash(revoked), wantRevoked, codes.OK},
		{"rotating", hasher.Hash(rotating), wantRotating, codes.OK},
		{"unknown", hasher.Hash(unknown), nil, codes.NotFound},
		{"short hash", []byte("short"), nil, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: tc.hash})
			if status.Code(err) != tc.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.want != nil && !proto.Equal(got, tc.want) {
				t.Fatalf("response =\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}
