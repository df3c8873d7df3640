package headroom

import (
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
)

var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func sample(min int, u5 float64, reset5 time.Time) store.HeadroomSample {
	r := reset5
	return store.HeadroomSample{SampledAt: t0.Add(time.Duration(min) * time.Minute), Utilization5h: &u5, Reset5h: &r}
}

func TestForWindow(t *testing.T) {
	reset := t0.Add(3 * time.Hour)
	later := t0.Add(8 * time.Hour)
	tests := []struct {
		name        string
		samples     []store.HeadroomSample
		ok          bool
		utilization float64
		burn        *float64
		limitAt     *time.Time
	}{
		{"no samples", nil, false, 0, nil, nil},
		{"one reading: no rate", []store.HeadroomSample{sample(0, 0.4, reset)}, true, 0.4, nil, nil},
		// 0.40 → 0.60 in 30 min: 0.4/h; 0.4 left → 1 h after +30 min.
		{"steady burn reaches the limit before the reset", []store.HeadroomSample{sample(30, 0.6, reset), sample(0, 0.4, reset)},
			true, 0.6, ptr(0.4), ptr(t0.Add(90 * time.Minute))},
		// 0.1/h: 4 h more, after the reset at +3 h.
		{"slow burn: not before the reset", []store.HeadroomSample{sample(0, 0.5, reset), sample(60, 0.6, reset)},
			true, 0.6, ptr(0.1), nil},
		{"readings older than the lookback are ignored", []store.HeadroomSample{sample(0, 0.0, reset), sample(60, 0.5, reset), sample(120, 0.7, reset)},
			true, 0.7, ptr(0.2), nil},
		{"another window's readings are ignored", []store.HeadroomSample{sample(0, 0.9, t0.Add(time.Minute)), sample(30, 0.1, later), sample(60, 0.3, later)},
			true, 0.3, ptr(0.4), ptr(t0.Add(60*time.Minute + 105*time.Minute))},
		{"falling utilization: no limit", []store.HeadroomSample{sample(0, 0.5, reset), sample(30, 0.4, reset)},
			true, 0.4, ptr(-0.2), nil},
		{"at the limit already", []store.HeadroomSample{sample(0, 0.5, reset), sample(30, 1, reset)},
			true, 1, nil, ptr(t0.Add(30 * time.Minute))},
		{"readings closer than MinSpan: no rate", []store.HeadroomSample{sample(0, 0.5, reset), {SampledAt: t0.Add(30 * time.Second), Utilization5h: ptr(0.6), Reset5h: &reset}},
			true, 0.6, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := ForWindow(tt.samples, Window5h)
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if f.Utilization != tt.utilization || f.Headroom != max(0, 1-tt.utilization) {
				t.Fatalf("utilization %v headroom %v", f.Utilization, f.Headroom)
			}
			if (f.BurnPerHour == nil) != (tt.burn == nil) || (f.BurnPerHour != nil && !near(*f.BurnPerHour, *tt.burn)) {
				t.Fatalf("burn %v, want %v", deref(f.BurnPerHour), deref(tt.burn))
			}
			if (f.LimitAt == nil) != (tt.limitAt == nil) || (f.LimitAt != nil && f.LimitAt.Sub(*tt.limitAt).Abs() > time.Second) {
				t.Fatalf("limit at %v, want %v", f.LimitAt, tt.limitAt)
			}
			if f.BeforeReset != (tt.limitAt != nil) {
				t.Fatalf("BeforeReset %v", f.BeforeReset)
			}
		})
	}
	if _, ok := ForWindow([]store.HeadroomSample{sample(0, 0.5, reset)}, Window7d); ok {
		t.Fatal("7d forecast without 7d readings")
	}
}

func ptr[T any](v T) *T { return &v }

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
