// Package headroom owns the arithmetic on Plan headroom readings (the
// anthropic-ratelimit-unified-* state that Plan answers announce, stored
// as store.HeadroomSample): the headroom left in each window and the
// forecast of when a developer reaches a window's limit at their current
// burn rate. It is pure: callers read the samples and the clock.
//
// # Forecast method
//
// For a window (5 h or 7 d), the readings of the current window are the
// ones that announce the same reset as the newest reading (within a
// minute; a new window announces a new reset). The burn rate is the
// utilization gained per hour between the oldest of those readings no
// more than Lookback before the newest and the newest: a linear
// extrapolation of the recent rate, not of the whole window, so that a
// developer who just started a heavy task is forecast by that task. At
// rate r > 0 and utilization u < 1 the limit is reached at newest + (1 −
// u) / r hours; when that is at or after the window's reset, the forecast
// says the limit is not reached before the reset. A utilization of 1 or
// more is at the limit already. Fewer than two readings in the lookback,
// less than MinSpan between them, or a rate ≤ 0 give no forecast.
package headroom

import (
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
)

// Windows.
const (
	Window5h = "5h"
	Window7d = "7d"
)

// Lookback is how far back before the newest reading the burn rate looks.
const Lookback = time.Hour

// MinSpan is the shortest time between two readings a rate is computed
// over.
const MinSpan = time.Minute

// sameReset is how far apart two announced resets may be and still name
// the same window.
const sameReset = time.Minute

// Forecast is the state and outlook of one window.
type Forecast struct {
	Window string
	// Utilization is the newest reading (1 = the limit); Headroom is
	// max(0, 1 − Utilization).
	Utilization float64
	Headroom    float64
	// ResetAt is the window's announced reset; nil when none was.
	ResetAt *time.Time
	// BurnPerHour is the utilization gained per hour at the current rate;
	// nil when it cannot be computed (see the package doc).
	BurnPerHour *float64
	// LimitAt is when the limit is reached at that rate; nil when it is
	// not reached before the reset or cannot be forecast.
	LimitAt *time.Time
	// BeforeReset reports that LimitAt falls before the reset.
	BeforeReset bool
}

// reading is one sample's figures for a window.
type reading struct {
	at    time.Time
	u     float64
	reset *time.Time
}

func readingOf(s store.HeadroomSample, window string) (reading, bool) {
	switch window {
	case Window5h:
		if s.Utilization5h == nil {
			return reading{}, false
		}
		return reading{s.SampledAt, *s.Utilization5h, s.Reset5h}, true
	case Window7d:
		if s.Utilization7d == nil {
			return reading{}, false
		}
		return reading{s.SampledAt, *s.Utilization7d, s.Reset7d}, true
	}
	return reading{}, false
}

func closeResets(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	d := a.Sub(*b)
	return d < sameReset && d > -sameReset
}

// ForWindow forecasts window from samples (in any order). ok is false when
// no sample carries the window's utilization.
func ForWindow(samples []store.HeadroomSample, window string) (Forecast, bool) {
	var newest reading
	found := false
	for _, s := range samples {
		if r, ok := readingOf(s, window); ok && (!found || r.at.After(newest.at)) {
			newest, found = r, true
		}
	}
	if !found {
		return Forecast{}, false
	}
	f := Forecast{Window: window, Utilization: newest.u, Headroom: max(0, 1-newest.u), ResetAt: newest.reset}
	if newest.u >= 1 {
		at := newest.at
		f.LimitAt, f.BeforeReset = &at, true
		return f, true
	}
	base := newest
	for _, s := range samples {
		r, ok := readingOf(s, window)
		if !ok || !closeResets(r.reset, newest.reset) || r.at.Before(newest.at.Add(-Lookback)) {
			continue
		}
		if r.at.Before(base.at) {
			base = r
		}
	}
	span := newest.at.Sub(base.at)
	if span < MinSpan {
		return f, true
	}
	rate := (newest.u - base.u) / span.Hours()
	f.BurnPerHour = &rate
	if rate <= 0 {
		return f, true
	}
	at := newest.at.Add(time.Duration((1 - newest.u) / rate * float64(time.Hour)))
	if newest.reset != nil && !at.Before(*newest.reset) {
		return f, true
	}
	f.LimitAt, f.BeforeReset = &at, true
	return f, true
}
