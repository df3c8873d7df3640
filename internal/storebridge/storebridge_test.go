package storebridge

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/extproc/usage"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
)

func openStore(t *testing.T) *store.Store { return storetest.Open(t) }

func TestKeyStoreThroughResolver(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	newKey := func(t *testing.T, userID uuid.UUID) (string, store.AccessKey) {
		k, _ := keys.Generate()
		ak, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: userID, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
		if err != nil {
			t.Fatal(err)
		}
		return k, ak
	}
	user, err := st.Users().Create(ctx, store.NewUser{Name: "ada", RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	resolver := auth.NewStoreResolver(KeyStore{Store: st}, hasher, nil)

	active, activeRow := newKey(t, user.ID)
	revoked, revokedRow := newKey(t, user.ID)
	if _, err := st.AccessKeys().Revoke(ctx, revokedRow.ID); err != nil {
		t.Fatal(err)
	}
	rotating, rotatingRow := newKey(t, user.ID)
	replacement, _ := keys.Generate()
	if _, _, err := st.AccessKeys().Rotate(ctx, rotatingRow.ID, hasher.Hash(replacement), keys.DisplayPrefix(replacement), time.Hour); err != nil {
		t.Fatal(err)
	}
	unknown, _ := keys.Generate()

	t.Run("active key resolves with the user's strategy", func(t *testing.T) {
		id, err := resolver.Resolve(ctx, active)
		if err != nil {
			t.Fatal(err)
		}
		if id.KeyID != activeRow.ID || id.UserID != user.ID || id.RoutingStrategy != "bedrock_only" || id.KeyPrefix != keys.DisplayPrefix(active) {
			t.Fatalf("identity = %+v", id)
		}
	})
	t.Run("rotating key resolves until its grace ends", func(t *testing.T) {
		id, err := resolver.Resolve(ctx, rotating)
		if err != nil {
			t.Fatal(err)
		}
		if id.ExpiresAt.IsZero() || time.Until(id.ExpiresAt) > time.Hour || time.Until(id.ExpiresAt) < 59*time.Minute {
			t.Fatalf("expires at %v, want about an hour from now", id.ExpiresAt)
		}
	})
	for _, tt := range []struct {
		name, key string
		want      error
	}{
		{"revoked", revoked, auth.ErrRevoked},
		{"unknown", unknown, auth.ErrUnknownKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := resolver.Resolve(ctx, tt.key); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("disabled user", func(t *testing.T) {
		if _, err := st.Users().Update(ctx, user.ID, store.UserPatch{Status: store.Some(store.UserDisabled)}); err != nil {
			t.Fatal(err)
		}
		if _, err := resolver.Resolve(ctx, active); err == nil {
			t.Fatal("a disabled user's key still resolves")
		}
	})
}

func TestUsageSinkWritesPricedEvents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := openStore(t)
	sink := NewUsageSink(st, UsageSinkOptions{FlushInterval: 10 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()

	user, key := uuid.New(), uuid.New()
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ev := usage.Event{
		RequestID: "req-1", Time: at, UserID: user, KeyID: key, SessionID: "sess", PathKind: usage.PathMessages,
		Model: "claude-sonnet-4-5-20250929", Provider: usage.ProviderAnthropic, Stream: true, Status: 200,
		Usage: usage.Usage{InputTokens: 1000, OutputTokens: 2000, CacheReadInputTokens: 3000, CacheWrite5mInputTokens: 4000, CacheWrite1hInputTokens: 5000},
		TTFT:  250 * time.Millisecond, Latency: 2 * time.Second,
	}
	sink.Record(ctx, ev)
	sink.Record(ctx, ev) // a duplicate delivery is stored once
	count := ev
	count.RequestID, count.PathKind, count.Usage = "req-2", usage.PathCountTokens, usage.Usage{}
	sink.Record(ctx, count)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := sink.WaitWritten(wctx, 3); err != nil {
		t.Fatal(err)
	}

	got, err := st.Usage().GetRequest(ctx, "req-1")
	if err != nil {
		t.Fatal(err)
	}
	price, flag, err := st.Prices().PriceAt(ctx, store.PriceQuery{Provider: store.ProviderAnthropic, Model: ev.Model, At: at})
	if err != nil {
		t.Fatal(err)
	}
	// Hand-computed from the rate card row: tokens × USD per million.
	want := price.Input.Mul(decimal.NewFromInt(1000)).Add(price.Output.Mul(decimal.NewFromInt(2000))).
		Add(price.CacheRead.Mul(decimal.NewFromInt(3000))).Add(price.CacheWrite5m.Mul(decimal.NewFromInt(4000))).
		Add(price.CacheWrite1h.Mul(decimal.NewFromInt(5000))).Div(decimal.NewFromInt(1_000_000)).Round(6)
	if !got.CostUSD.Equal(want) || got.PriceFlag != flag || flag != store.PriceExact {
		t.Errorf("cost = %s (%s), want %s (exact)", got.CostUSD, got.PriceFlag, want)
	}
	if got.InputTokens != 1000 || got.OutputTokens != 2000 || got.CacheReadTokens != 3000 || got.CacheWrite5mTokens != 4000 ||
		got.CacheWrite1hTokens != 5000 || got.TTFTMs == nil || *got.TTFTMs != 250 || got.LatencyMs != 2000 ||
		got.SessionID != "sess" || got.UserID != user || got.AccessKeyID != key || !got.Stream || got.Status != 200 {
		t.Errorf("row = %+v", got)
	}
	counted, err := st.Usage().GetRequest(ctx, "req-2")
	if err != nil {
		t.Fatal(err)
	}
	if !counted.CostUSD.IsZero() || counted.PriceFlag != store.PriceNone || counted.Kind != store.KindCountTokens {
		t.Errorf("count_tokens row = %+v", counted)
	}
	if written, dropped := sink.Stats(); written != 3 || dropped != 0 {
		t.Errorf("stats = %d written, %d dropped", written, dropped)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestUsageSinkDropsWhenFullAndFlushesOnStop(t *testing.T) {
	st := openStore(t)
	sink := NewUsageSink(st, UsageSinkOptions{Buffer: 2})
	ev := usage.Event{RequestID: "a", Time: time.Now(), PathKind: usage.PathMessages, Provider: usage.ProviderAnthropic, Model: "claude-sonnet-4-5"}
	for _, id := range []string{"a", "b", "c"} {
		ev.RequestID = id
		sink.Record(context.Background(), ev)
	}
	if _, dropped := sink.Stats(); dropped != 1 {
		t.Fatalf("dropped = %d, want 1", dropped)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run must still write what was queued.
	if err := sink.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if written, _ := sink.Stats(); written != 2 {
		t.Fatalf("written at stop = %d, want 2", written)
	}
}
