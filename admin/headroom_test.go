package admin_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

func TestUserHeadroomSettings(t *testing.T) {
	e := newEnv(t)
	id := e.createUser("Ada")
	resp := e.do("PATCH", "/api/v1/users/"+id, map[string]any{"preempt_threshold": 0.95, "seat_type": "max_20x"})
	want(t, resp, http.StatusOK)
	var u struct {
		Preempt *float64 `json:"preempt_threshold"`
		Seat    *string  `json:"seat_type"`
	}
	resp.decode(t, &u)
	if u.Preempt == nil || *u.Preempt != 0.95 || u.Seat == nil || *u.Seat != "max_20x" {
		t.Fatalf("user %s", resp.body)
	}
	if invs := e.inv.all(); len(invs) == 0 {
		t.Fatal("changing the threshold did not invalidate the key caches")
	}
	resp = e.do("PATCH", "/api/v1/users/"+id, map[string]any{"preempt_threshold": nil, "seat_type": nil})
	want(t, resp, http.StatusOK)
	resp.decode(t, &u)
	if u.Preempt != nil || u.Seat != nil {
		t.Fatalf("after null: %s", resp.body)
	}
	for _, body := range []map[string]any{{"preempt_threshold": 1.5}, {"preempt_threshold": -0.1}, {"seat_type": "gold"}} {
		resp := e.do("PATCH", "/api/v1/users/"+id, body)
		want(t, resp, http.StatusUnprocessableEntity)
		if f := resp.problem(t).fields(); len(f) != 1 {
			t.Fatalf("%v: fields %v", body, f)
		}
	}
	resp = e.do("POST", "/api/v1/users", map[string]any{"name": "Grace", "preempt_threshold": 0, "seat_type": "api"})
	want(t, resp, http.StatusCreated)
	resp.decode(t, &u)
	if u.Preempt == nil || *u.Preempt != 0 || u.Seat == nil || *u.Seat != "api" {
		t.Fatalf("created %s", resp.body)
	}
}

func TestHeadroomAPI(t *testing.T) {
	e := newEnv(t)
	d := seedDashboard(t, e)
	ctx := context.Background()
	now := time.Now().UTC()
	reset := now.Add(2 * time.Hour).Truncate(time.Second)
	reset7 := now.Add(100 * time.Hour).Truncate(time.Second)
	f := func(v float64) *float64 { return &v }
	ada := uuid.MustParse(d.ada)
	samples := []store.HeadroomSample{
		{UserID: ada, AccessKeyID: uuid.MustParse(d.adaKey), SampledAt: now.Add(-40 * time.Minute), Status: "allowed", Claim: "five_hour",
			Utilization5h: f(0.5), Reset5h: &reset, Utilization7d: f(0.2), Reset7d: &reset7, ResetAt: &reset},
		{UserID: ada, AccessKeyID: uuid.MustParse(d.adaKey), SampledAt: now.Add(-10 * time.Minute), Status: "allowed_warning", Claim: "five_hour",
			Utilization5h: f(0.8), Reset5h: &reset, Utilization7d: f(0.2), Reset7d: &reset7, ResetAt: &reset},
	}
	if err := e.st.Headroom().Record(ctx, samples); err != nil {
		t.Fatal(err)
	}

	t.Run("a developer's headroom and forecast", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/users/"+d.ada+"/headroom", nil)
		want(t, resp, http.StatusOK)
		var h struct {
			Current *struct {
				Utilization5h float64 `json:"utilization_5h"`
				Status        string  `json:"status"`
			} `json:"current"`
			Forecasts []struct {
				Window      string     `json:"window"`
				Headroom    float64    `json:"headroom"`
				BurnPerHour *float64   `json:"burn_per_hour"`
				LimitAt     *time.Time `json:"limit_at"`
				BeforeReset bool       `json:"limit_before_reset"`
			} `json:"forecasts"`
			History []struct{} `json:"history"`
		}
		resp.decode(t, &h)
		if h.Current == nil || h.Current.Utilization5h != 0.8 || h.Current.Status != "allowed_warning" || len(h.History) != 2 {
			t.Fatalf("headroom %s", resp.body)
		}
		if len(h.Forecasts) != 2 || h.Forecasts[0].Window != "5h" || h.Forecasts[1].Window != "7d" {
			t.Fatalf("forecasts %s", resp.body)
		}
		// 0.5 → 0.8 in 30 minutes: 0.6 an hour; 0.2 left: 20 minutes
		// after the newest reading, before the reset.
		f5 := h.Forecasts[0]
		wantAt := now.Add(-10 * time.Minute).Add(20 * time.Minute)
		if f5.BurnPerHour == nil || *f5.BurnPerHour < 0.5999 || *f5.BurnPerHour > 0.6001 || f5.LimitAt == nil ||
			f5.LimitAt.Sub(wantAt).Abs() > time.Second || !f5.BeforeReset || f5.Headroom < 0.1999 || f5.Headroom > 0.2001 {
			t.Fatalf("5h forecast %+v, want 0.6/h and limit at %s", f5, wantAt)
		}
		if f7 := h.Forecasts[1]; f7.BurnPerHour == nil || *f7.BurnPerHour != 0 || f7.LimitAt != nil || f7.BeforeReset {
			t.Fatalf("7d forecast %+v: a flat reading reaches no limit", f7)
		}
		// No readings: no current, no forecast; an unknown user is 404.
		resp = e.do("GET", "/api/v1/users/"+d.grace+"/headroom", nil)
		want(t, resp, http.StatusOK)
		var empty map[string]any
		resp.decode(t, &empty)
		if empty["current"] != nil || len(empty["forecasts"].([]any)) != 0 || len(empty["history"].([]any)) != 0 {
			t.Fatalf("no readings: %s", resp.body)
		}
		want(t, e.do("GET", "/api/v1/users/"+uuid.NewString()+"/headroom", nil), http.StatusNotFound)
		resp = e.do("GET", "/api/v1/users/"+d.ada+"/headroom?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", nil)
		want(t, resp, http.StatusUnprocessableEntity)
	})

	t.Run("the fleet", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/headroom", nil)
		want(t, resp, http.StatusOK)
		var p struct {
			Items []struct {
				UserID        string  `json:"user_id"`
				Name          string  `json:"name"`
				Utilization5h float64 `json:"utilization_5h"`
			} `json:"items"`
		}
		resp.decode(t, &p)
		if len(p.Items) != 1 || p.Items[0].UserID != d.ada || p.Items[0].Name != "Ada Lovelace" || p.Items[0].Utilization5h != 0.8 {
			t.Fatalf("fleet %s", resp.body)
		}
	})

	t.Run("seat economics", func(t *testing.T) {
		want(t, e.do("PATCH", "/api/v1/users/"+d.ada, map[string]any{"seat_type": "max_5x"}), http.StatusOK)
		resp := e.do("GET", "/api/v1/seats", nil)
		want(t, resp, http.StatusOK)
		type seat struct {
			UserID            string  `json:"user_id"`
			SeatType          *string `json:"seat_type"`
			SeatPrice         *string `json:"seat_price_usd"`
			PlanList          string  `json:"plan_list_usd"`
			Bedrock           string  `json:"bedrock_usd"`
			BedrockEquivalent string  `json:"bedrock_equivalent_usd"`
			Fallbacks         int64   `json:"fallbacks"`
			Recommendation    string  `json:"recommendation"`
			RecommendedSeat   *string `json:"recommended_seat"`
		}
		var s struct {
			Month  string            `json:"month"`
			Prices map[string]string `json:"seat_prices_usd"`
			Items  []seat            `json:"items"`
		}
		resp.decode(t, &s)
		if s.Month != d.month.Format("2006-01") || s.Prices["max_5x"] != "100.00" || len(s.Items) != 2 {
			t.Fatalf("seats %s", resp.body)
		}
		i := slices.IndexFunc(s.Items, func(x seat) bool { return x.UserID == d.ada })
		a := s.Items[i]
		// Ada's Plan request at Bedrock's in-region rates (the list rates:
		// 6,600 µ$) plus her Bedrock spend (56,100 µ$).
		if *a.SeatType != "max_5x" || *a.SeatPrice != "100.00" || a.PlanList != "0.006600" || a.Bedrock != "0.056100" ||
			a.BedrockEquivalent != "0.062700" || a.Fallbacks != 1 || a.Recommendation != "downgrade" || *a.RecommendedSeat != "pro" {
			t.Fatalf("ada %+v", a)
		}
		g := s.Items[1-i]
		if g.UserID != d.grace || g.SeatType != nil || g.Recommendation != "set_seat" || g.PlanList != "0.002250" {
			t.Fatalf("grace %+v", g)
		}
		want(t, e.do("GET", "/api/v1/seats?month=2026-13", nil), http.StatusUnprocessableEntity)
	})
}

func TestRecommend(t *testing.T) {
	prices := admin.DefaultSeatPrices()
	seat := func(s store.SeatType) *store.SeatType { return &s }
	dec := decimal.RequireFromString
	tests := []struct {
		name      string
		seat      *store.SeatType
		plan      string
		bedrock   string
		fallbacks int64
		action    string
		to        store.SeatType
	}{
		{"no seat", nil, "10", "0", 0, "set_seat", ""},
		{"api, light use", seat(store.SeatAPI), "19.99", "0", 0, "keep", ""},
		{"api worth a Pro", seat(store.SeatAPI), "20", "0", 0, "switch", store.SeatPro},
		{"api worth a Max 5x", seat(store.SeatAPI), "150", "0", 0, "switch", store.SeatMax5x},
		{"api worth a Max 20x", seat(store.SeatAPI), "900", "0", 0, "switch", store.SeatMax20x},
		{"pro, limited, overflow above the step", seat(store.SeatPro), "80", "80.01", 3, "upgrade", store.SeatMax5x},
		{"pro, limited, overflow below the step", seat(store.SeatPro), "80", "80", 3, "keep", ""},
		{"pro, overflow without fallbacks (bedrock by choice)", seat(store.SeatPro), "80", "500", 0, "keep", ""},
		{"pro, barely used", seat(store.SeatPro), "19.99", "0", 0, "switch", store.SeatAPI},
		{"max 5x, used less than a Pro", seat(store.SeatMax5x), "19", "0", 0, "downgrade", store.SeatPro},
		{"max 5x, fits", seat(store.SeatMax5x), "60", "0", 0, "keep", ""},
		{"max 20x, used less than a Max 5x", seat(store.SeatMax20x), "99", "0", 0, "downgrade", store.SeatMax5x},
		{"max 20x, limited: nothing bigger", seat(store.SeatMax20x), "900", "400", 9, "keep", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := admin.Recommend(tt.seat, dec(tt.plan), dec(tt.bedrock), tt.fallbacks, prices)
			if r.Action != tt.action || r.Seat != tt.to || r.Reason == "" {
				t.Fatalf("Recommend = %+v, want %s %q", r, tt.action, tt.to)
			}
		})
	}
}
