package store_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

func TestSessionRowsAndOrder(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	user, other, key := uuid.New(), uuid.New(), uuid.New()
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	mk := func(id, session, agent string, at time.Duration, cost string) store.UsageEvent {
		e := event(id, t0.Add(at), user, key)
		e.SessionID, e.AgentID, e.CostUSD = session, agent, decimal.RequireFromString(cost)
		return e
	}
	m1 := mk("m1", "cheap-recent", "", 3*time.Hour, "0.01")
	m1.AgentSpawns = 2
	sub := mk("a1", "cheap-recent", "agent-a", 3*time.Hour+time.Minute, "0.02")
	sub.ParentAgentID = "agent-root"
	count := mk("c1", "cheap-recent", "", 3*time.Hour+2*time.Minute, "0")
	count.Kind, count.PriceFlag = store.KindCountTokens, store.PriceNone
	evs := []store.UsageEvent{
		mk("x1", "dear-old", "", 0, "1.5"), mk("x2", "dear-old", "", time.Minute, "0.25"),
		m1, sub, count,
		mk("n1", "", "", 4*time.Hour, "9"),
	}
	o := event("o1", t0.Add(time.Hour), other, key)
	o.SessionID = "cheap-recent"
	evs = append(evs, o)
	if _, err := st.Usage().InsertEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}

	t.Run("sessions by cost and by recency", func(t *testing.T) {
		for _, tt := range []struct {
			sort store.SessionSort
			want []string
		}{
			{store.SessionsByCost, []string{"dear-old 1.75 1", "cheap-recent 0.03 2"}},
			{store.SessionsByRecent, []string{"cheap-recent 0.03 2", "dear-old 1.75 1"}},
			{"", []string{"cheap-recent 0.03 2", "dear-old 1.75 1"}},
		} {
			ss, err := st.Usage().Sessions(ctx, user, t0, t0.Add(24*time.Hour), 10, tt.sort)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range ss {
				got = append(got, s.ID+" "+s.CostUSD.String()+" "+string(rune('0'+s.Agents)))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("sort %q: %q; want %q", tt.sort, got, tt.want)
			}
		}
		if _, err := st.Usage().Sessions(ctx, user, t0, t0.Add(time.Hour), 10, "wasteful"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("unknown sort: %v; want ErrInvalid", err)
		}
	})

	t.Run("scan one session of one user, oldest first, Messages only", func(t *testing.T) {
		var got []store.UsageEvent
		err := st.Usage().ScanEvents(ctx, store.EventScan{UserID: &user, SessionID: "cheap-recent"}, func(e store.UsageEvent) error {
			got = append(got, e)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].RequestID != "m1" || got[0].AgentSpawns != 2 || got[0].ParentAgentID != "" ||
			got[1].RequestID != "a1" || got[1].ParentAgentID != "agent-root" || got[1].AgentID != "agent-a" {
			t.Errorf("rows %+v", got)
		}
	})

	t.Run("scan by time range", func(t *testing.T) {
		var ids []string
		err := st.Usage().ScanEvents(ctx, store.EventScan{From: t0.Add(time.Minute), To: t0.Add(4 * time.Hour)}, func(e store.UsageEvent) error {
			ids = append(ids, e.RequestID)
			return nil
		})
		if err != nil || !slices.Equal(ids, []string{"x2", "o1", "m1", "a1"}) {
			t.Errorf("rows %q, %v", ids, err)
		}
	})

	t.Run("limit refuses before reading", func(t *testing.T) {
		called := false
		err := st.Usage().ScanEvents(ctx, store.EventScan{UserID: &user, Limit: 4}, func(store.UsageEvent) error {
			called = true
			return nil
		})
		if !errors.Is(err, store.ErrTooMany) || called {
			t.Errorf("5 rows with limit 4: %v (fn called: %v); want ErrTooMany", err, called)
		}
		n := 0
		err = st.Usage().ScanEvents(ctx, store.EventScan{UserID: &user, Limit: 5}, func(store.UsageEvent) error {
			n++
			return nil
		})
		if err != nil || n != 5 {
			t.Errorf("5 rows with limit 5: %d, %v", n, err)
		}
	})
}

func TestUserNames(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	a, err := st.Users().Create(ctx, store.NewUser{Name: "Ada", RoutingStrategy: store.PlanFirst})
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Users().Create(ctx, store.NewUser{Name: "Grace", RoutingStrategy: store.PlanFirst})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Users().SoftDelete(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	got, err := st.Users().Names(ctx, []uuid.UUID{a.ID, b.ID, uuid.New()})
	if err != nil || len(got) != 2 || got[a.ID] != "Ada" || got[b.ID] != "Grace" {
		t.Errorf("Names = %v, %v; want Ada and Grace (deleted users keep their name in reports)", got, err)
	}
}
