package keyservice

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"context"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
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
	"github.com/ccproxy/ccproxy/internal/testenv"
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
	// Rate limits: the user's apply to every key, a key's own only to it,
	// and a refused key gets none.
	five, thousand := int64(5), int64(1000)
	if _, err := st.RateLimits().Put(ctx, store.RateLimitUser, user.ID, store.RateLimitValues{RequestsPerMinute: &five}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uuid.UUID{activeRow.ID, revokedRow.ID} {
		if _, err := st.RateLimits().Put(ctx, store.RateLimitKey, id, store.RateLimitValues{InputTokensPerMinute: &thousand}); err != nil {
			t.Fatal(err)
		}
	}
	userLimit := &keyservicev1.RateLimit{Scope: "user", Id: user.ID.String(), RequestsPerMinute: 5}

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
	wantActive.RateLimits = []*keyservicev1.RateLimit{
		{Scope: "key", Id: activeRow.ID.String(), InputTokensPerMinute: 1000}, userLimit,
	}
	wantRevoked := base(revoked, revokedRow)
	wantRevoked.Status = keyservicev1.KeyStatus_KEY_STATUS_REVOKED
	wantRevoked.RevokedAt = timestamppb.New(*revokedRow.RevokedAt)
	wantRotating := base(rotating, rotatingRow)
	wantRotating.Status = keyservicev1.KeyStatus_KEY_STATUS_ROTATING
	wantRotating.ExpiresAt = timestamppb.New(*rotatingRow.GraceUntil)
	wantRotating.RateLimits = []*keyservicev1.RateLimit{userLimit}

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

// spendEvent is a priced usage event for MonthlySpend tests.
func spendEvent(id string, user uuid.UUID, provider store.Provider, at time.Time, cost string) store.UsageEvent {
	return store.UsageEvent{
		RequestID: id, EventTime: at, UserID: user, AccessKeyID: uuid.New(), Kind: store.KindMessages,
		RequestedModel: "claude-sonnet-4-5", Provider: provider, Status: 200, InputTokens: 10, OutputTokens: 20,
		CostUSD: decimal.RequireFromString(cost), PriceFlag: store.PriceExact, LatencyMs: 100,
	}
}

func TestMonthlySpendOverGRPC(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	// Each subtest moves the clock past the reuse of the previous answers.
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tick := func() { now = now.Add(DefaultSpendReuse) }
	NewServer(st, Options{Redis: rdb, RedisPrefix: prefix, Location: kolkata, Now: func() time.Time { return now }}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := keyservicev1.NewKeyServiceClient(conn)

	// March 2026 in Kolkata (UTC+5:30) is [Feb 28 18:30 UTC, Mar 31 18:30 UTC).
	u, err := st.Users().Create(ctx, store.NewUser{Name: "spender", RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	user, other := u.ID, uuid.New() // other has usage rows but is no user
	start := time.Date(2026, 2, 28, 18, 30, 0, 0, time.UTC)
	end := time.Date(2026, 3, 31, 18, 30, 0, 0, time.UTC)
	events := []store.UsageEvent{
		spendEvent("before", user, store.ProviderBedrock, start.Add(-time.Second), "100"),
		spendEvent("first", user, store.ProviderBedrock, start, "0.100001"),
		spendEvent("middle", user, store.ProviderBedrock, time.Date(2026, 3, 15, 9, 0, 0, 0, time.UTC), "2.2"),
		spendEvent("middle-2", user, store.ProviderBedrock, time.Date(2026, 3, 15, 9, 59, 0, 0, time.UTC), "0.000002"),
		spendEvent("last", user, store.ProviderBedrock, end.Add(-time.Microsecond), "3"),
		spendEvent("after", user, store.ProviderBedrock, end, "200"),
		spendEvent("plan", user, store.ProviderAnthropic, time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC), "400"),
		spendEvent("other-user", other, store.ProviderBedrock, time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC), "800"),
	}
	if _, err := st.Usage().InsertEvents(ctx, events); err != nil {
		t.Fatal(err)
	}

	t.Run("computes the month from rows and sets the counter", func(t *testing.T) {
		resp, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: user.String(), Month: "2026-03"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSpendUsd() != "5.300003" {
			t.Fatalf("spend_usd = %q, want 5.300003", resp.GetSpendUsd())
		}
		key := prefix + "spend:" + user.String() + ":2026-03"
		if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "5.300003" {
			t.Fatalf("counter = %q, %v", v, err)
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 39*24*time.Hour || ttl > 40*24*time.Hour {
			t.Fatalf("counter TTL = %v, want 40 days", ttl)
		}
	})
	t.Run("overwrites an unreadable counter", func(t *testing.T) {
		tick()
		key := prefix + "spend:" + user.String() + ":2026-03"
		rdb.Set(ctx, key, "garbage", time.Hour)
		if _, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: user.String(), Month: "2026-03"}); err != nil {
			t.Fatal(err)
		}
		if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "5.300003" {
			t.Fatalf("counter = %q, %v", v, err)
		}
	})
	t.Run("other months", func(t *testing.T) {
		tick()
		for month, want := range map[string]string{"2026-02": "100.000000", "2026-04": "200.000000", "2025-12": "0.000000"} {
			resp, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: user.String(), Month: month})
			if err != nil || resp.GetSpendUsd() != want {
				t.Fatalf("%s: spend_usd = %q, %v; want %s", month, resp.GetSpendUsd(), err, want)
			}
		}
	})
	t.Run("a uuid that is no user has no spend and no counter", func(t *testing.T) {
		// Without the check any uuid forced a recompute over usage rows and
		// left a counter in Redis.
		resp, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: other.String(), Month: "2026-03"})
		if err != nil || resp.GetSpendUsd() != "0.000000" {
			t.Fatalf("spend_usd = %q, %v; want 0.000000", resp.GetSpendUsd(), err)
		}
		if n := rdb.Exists(ctx, prefix+"spend:"+other.String()+":2026-03").Val(); n != 0 {
			t.Fatalf("a counter was stored for a uuid that is no user")
		}
	})
	t.Run("an answer is reused, not recomputed, for SpendReuse", func(t *testing.T) {
		tick()
		ask := func() string {
			t.Helper()
			resp, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: user.String(), Month: "2026-03"})
			if err != nil {
				t.Fatal(err)
			}
			return resp.GetSpendUsd()
		}
		if got := ask(); got != "5.300003" {
			t.Fatalf("spend_usd = %q, want 5.300003", got)
		}
		if _, err := st.Usage().InsertEvents(ctx, []store.UsageEvent{
			spendEvent("late", user, store.ProviderBedrock, time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC), "1"),
		}); err != nil {
			t.Fatal(err)
		}
		now = now.Add(DefaultSpendReuse - time.Nanosecond)
		if got := ask(); got != "5.300003" {
			t.Fatalf("within the reuse window: spend_usd = %q, want the reused 5.300003", got)
		}
		now = now.Add(time.Nanosecond)
		if got := ask(); got != "6.300003" {
			t.Fatalf("after the reuse window: spend_usd = %q, want the recomputed 6.300003", got)
		}
	})
	for _, tc := range []struct{ name, user, month string }{
		{"bad user", "nope", "2026-03"},
		{"bad month", user.String(), "2026-13"},
		{"empty month", user.String(), ""},
		{"long month", user.String(), "2026-03-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.MonthlySpend(ctx, &keyservicev1.MonthlySpendRequest{UserId: tc.user, Month: tc.month})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", status.Code(err), err)
			}
		})
	}
}

func TestMonthlySpendWithoutRedis(t *testing.T) {
	st := storetest.Open(t)
	u, err := st.Users().Create(context.Background(), store.NewUser{Name: "spender", RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	user := u.ID
	if _, err := st.Usage().InsertEvents(context.Background(), []store.UsageEvent{
		spendEvent("a", user, store.ProviderBedrock, time.Date(2026, 3, 31, 23, 0, 0, 0, time.UTC), "1.5"),
	}); err != nil {
		t.Fatal(err)
	}
	// UTC by default: 23:00 UTC on Mar 31 is March.
	resp, err := NewServer(st, Options{}).MonthlySpend(context.Background(), &keyservicev1.MonthlySpendRequest{UserId: user.String(), Month: "2026-03"})
	if err != nil || resp.GetSpendUsd() != "1.500000" {
		t.Fatalf("spend_usd = %q, %v", resp.GetSpendUsd(), err)
	}
}

// TestLookupKeyTeam: a member's answer names the team, its allow-list and
// its rate limits after the key's and the user's; the team's threshold
// applies until the user has one of their own.
func TestLookupKeyTeam(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	s := NewServer(st, Options{CacheTTL: 7 * time.Second})
	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	threshold := 0.8
	team, err := st.Teams().Create(ctx, store.NewTeam{Name: "Platform", AllowedModels: []string{"claude-sonnet-4-5", "claude-haiku-4-5"},
		PreemptThreshold: &threshold})
	if err != nil {
		t.Fatal(err)
	}
	user, err := st.Users().Create(ctx, store.NewUser{Name: "ada", TeamID: &team.ID})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.Generate()
	row, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: user.ID, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
	if err != nil {
		t.Fatal(err)
	}
	ten, five := int64(10), int64(5)
	if _, err := st.RateLimits().Put(ctx, store.RateLimitTeam, team.ID, store.RateLimitValues{RequestsPerMinute: &ten}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RateLimits().Put(ctx, store.RateLimitUser, user.ID, store.RateLimitValues{RequestsPerMinute: &five}); err != nil {
		t.Fatal(err)
	}
	want := &keyservicev1.LookupKeyResponse{
		KeyId: row.ID.String(), UserId: user.ID.String(), KeyPrefix: keys.DisplayPrefix(k), RoutingStrategy: "plan_first",
		Status: keyservicev1.KeyStatus_KEY_STATUS_ACTIVE, CacheTtl: durationpb.New(7 * time.Second),
		PreemptThreshold: &threshold,
		TeamId:           team.ID.String(), TeamName: "Platform", AllowedModels: []string{"claude-sonnet-4-5", "claude-haiku-4-5"},
		RateLimits: []*keyservicev1.RateLimit{
			{Scope: "user", Id: user.ID.String(), RequestsPerMinute: 5},
			{Scope: "team", Id: team.ID.String(), RequestsPerMinute: 10},
		},
	}
	got, err := s.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: hasher.Hash(k)})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("response =\n%v\nwant\n%v", got, want)
	}

	// The user's own threshold wins; leaving the team drops the team.
	own := 0.0
	if _, err := st.Users().Update(ctx, user.ID, store.UserPatch{PreemptThreshold: store.Some(&own)}); err != nil {
		t.Fatal(err)
	}
	if got, err = s.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: hasher.Hash(k)}); err != nil || got.GetPreemptThreshold() != 0 || got.PreemptThreshold == nil {
		t.Fatalf("own threshold: %v, %v", got.PreemptThreshold, err)
	}
	if _, err := st.Users().Update(ctx, user.ID, store.UserPatch{TeamID: store.Some[*uuid.UUID](nil)}); err != nil {
		t.Fatal(err)
	}
	got, err = s.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: hasher.Hash(k)})
	if err != nil || got.TeamId != "" || got.TeamName != "" || got.AllowedModels != nil || len(got.RateLimits) != 1 {
		t.Fatalf("after leaving: %v, %v", got, err)
	}
}
