package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// TestHandleRecordsHeadroom: Plan answers' rate-limit readings become
// plan_headroom samples, the newest per user and 5-minute bucket; events
// without readings add none, and a redelivered older reading never
// replaces a newer one.
func TestHandleRecordsHeadroom(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	u, err := st.Users().Create(ctx, store.NewUser{Name: "headroom"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	in := newIngester(t, st, rdb, prefix, time.UTC, at)
	reset := at.Add(4 * time.Hour)
	ev := func(id string, when time.Time, util float64) usage.Event {
		e := event(id, when, usage.ProviderAnthropic, "claude-sonnet-4-5", 10, 1)
		e.UserID = u.ID
		if util >= 0 {
			e.PlanLimits = usage.PlanLimits{Status: usage.PlanStatusAllowed, Claim: "five_hour",
				Utilization5h: util, Has5h: true, Reset5h: reset, Reset: reset}
		}
		return e
	}
	steps := []struct {
		name  string
		batch []usage.Event
		want  []float64 // utilization_5h of the history, oldest first
	}{
		{"two readings in one bucket: the newer wins", []usage.Event{ev("h1", at.Add(time.Minute), 0.5), ev("h2", at.Add(2*time.Minute), 0.52)}, []float64{0.52}},
		{"no reading, no sample", []usage.Event{ev("h3", at.Add(6*time.Minute), -1)}, []float64{0.52}},
		{"a new bucket", []usage.Event{ev("h4", at.Add(6*time.Minute), 0.6)}, []float64{0.52, 0.6}},
		{"an older reading does not replace a newer one", []usage.Event{ev("h1", at.Add(time.Minute), 0.5)}, []float64{0.52, 0.6}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := in.Handle(ctx, s.batch); err != nil {
				t.Fatal(err)
			}
			hist, err := st.Headroom().History(ctx, u.ID, at.Add(-time.Hour), at.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var got []float64
			for _, h := range hist {
				if h.Utilization5h == nil || h.Reset5h == nil || !h.Reset5h.Equal(reset) || h.Claim != "five_hour" || h.Status != "allowed" {
					t.Fatalf("sample %+v", h)
				}
				got = append(got, *h.Utilization5h)
			}
			if len(got) != len(s.want) {
				t.Fatalf("history %v, want %v", got, s.want)
			}
			for i := range got {
				if got[i] != s.want[i] {
					t.Fatalf("history %v, want %v", got, s.want)
				}
			}
		})
	}
	latest, err := st.Headroom().Latest(ctx, u.ID)
	if err != nil || *latest.Utilization5h != 0.6 || !latest.SampledAt.Equal(at.Add(6*time.Minute)) {
		t.Fatalf("Latest = %+v, %v", latest, err)
	}
	n, err := st.Headroom().DeleteBefore(ctx, at.Add(5*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("DeleteBefore = %d, %v; want 1", n, err)
	}
}
