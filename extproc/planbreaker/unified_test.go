package planbreaker

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/usage"
)

func unified(kv ...string) UnifiedHeaders {
	var u UnifiedHeaders
	for i := 0; i+1 < len(kv); i += 2 {
		u.Set(kv[i], []byte(kv[i+1]))
	}
	return u
}

func TestUnifiedLimits(t *testing.T) {
	reset5h := time.Unix(1772384400, 0).UTC() // t+5 h
	reset7d := time.Unix(1772971200, 0).UTC()
	tests := []struct {
		name    string
		headers []string
		want    usage.PlanLimits
	}{
		{"none", nil, usage.PlanLimits{}},
		{"a subscription answer", []string{
			"anthropic-ratelimit-unified-status", "allowed_warning",
			"anthropic-ratelimit-unified-representative-claim", "five_hour",
			"anthropic-ratelimit-unified-reset", "1772384400",
			"anthropic-ratelimit-unified-5h-utilization", "0.93",
			"anthropic-ratelimit-unified-5h-reset", "1772384400",
			"anthropic-ratelimit-unified-7d-utilization", "0.4",
			"anthropic-ratelimit-unified-7d-reset", "1772971200",
			"anthropic-ratelimit-unified-5h-status", "allowed",
		}, usage.PlanLimits{
			Status: "allowed_warning", Claim: "five_hour", Reset: reset5h,
			Utilization5h: 0.93, Has5h: true, Reset5h: reset5h,
			Utilization7d: 0.4, Has7d: true, Reset7d: reset7d,
		}},
		{"zero utilization is a reading", []string{"anthropic-ratelimit-unified-5h-utilization", "0"},
			usage.PlanLimits{Has5h: true}},
		{"whole and leading-dot numbers, spaces", []string{
			"anthropic-ratelimit-unified-5h-utilization", " 1 ",
			"anthropic-ratelimit-unified-7d-utilization", ".25",
		}, usage.PlanLimits{Utilization5h: 1, Has5h: true, Utilization7d: 0.25, Has7d: true}},
		{"reset in milliseconds", []string{"anthropic-ratelimit-unified-5h-reset", "1772384400000"},
			usage.PlanLimits{Reset5h: reset5h}},
		{"an unknown claim is kept", []string{"anthropic-ratelimit-unified-representative-claim", "seven_day_oi"},
			usage.PlanLimits{Claim: "seven_day_oi"}},
		{"garbage is dropped", []string{
			"anthropic-ratelimit-unified-status", "Allowed!",
			"anthropic-ratelimit-unified-representative-claim", "a-very-long-claim-name-that-goes-on-and-on",
			"anthropic-ratelimit-unified-5h-utilization", "-0.5",
			"anthropic-ratelimit-unified-7d-utilization", "1e3",
			"anthropic-ratelimit-unified-5h-reset", "soon",
			"anthropic-ratelimit-unified-7d-reset", "-1",
			"anthropic-ratelimit-unified-reset", "0",
		}, usage.PlanLimits{}},
		{"utilization above 100 is garbage", []string{"anthropic-ratelimit-unified-5h-utilization", "100.5"},
			usage.PlanLimits{}},
		{"too many decimals", []string{"anthropic-ratelimit-unified-5h-utilization", "0.1234567891"},
			usage.PlanLimits{}},
		{"a lone dot", []string{"anthropic-ratelimit-unified-5h-utilization", "."}, usage.PlanLimits{}},
		{"first value wins", []string{
			"anthropic-ratelimit-unified-5h-utilization", "0.5",
			"anthropic-ratelimit-unified-5h-utilization", "0.9",
		}, usage.PlanLimits{Utilization5h: 0.5, Has5h: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := unified(tt.headers...)
			got := u.Limits()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Limits() =\n %+v\nwant\n %+v", got, tt.want)
			}
			from := UnifiedFrom(headerFunc(tt.headers...))
			if got := from.Limits(); !reflect.DeepEqual(got, tt.want) && tt.name != "first value wins" {
				t.Fatalf("UnifiedFrom(...).Limits() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestUnifiedSetIgnoresOtherHeaders(t *testing.T) {
	var u UnifiedHeaders
	for _, n := range []string{"content-type", "anthropic-ratelimit-unified-overage-status", "anthropic-ratelimit-tokens-reset"} {
		if u.Set(n, []byte("x")) {
			t.Errorf("Set(%q) = true", n)
		}
	}
	if !u.Empty() {
		t.Fatal("not empty")
	}
	if !u.Set(HeaderUnified5hUtil, []byte("0.1")) || u.Empty() {
		t.Fatal("Set of a unified header not kept")
	}
}

func TestUnifiedLimitsDoesNotAllocate(t *testing.T) {
	u := unified(
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-representative-claim", "seven_day",
		"anthropic-ratelimit-unified-5h-utilization", "0.93",
		"anthropic-ratelimit-unified-5h-reset", "1772384400",
		"anthropic-ratelimit-unified-7d-utilization", "0.4",
		"anthropic-ratelimit-unified-7d-reset", "1772971200",
	)
	if n := testing.AllocsPerRun(100, func() { _ = u.Limits() }); n != 0 {
		t.Fatalf("Limits allocates %v times", n)
	}
}

func TestPreempt(t *testing.T) {
	r5 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	r7 := time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)
	l := func(u5, u7 float64) usage.PlanLimits {
		out := usage.PlanLimits{Reset5h: r5, Reset7d: r7}
		if u5 >= 0 {
			out.Utilization5h, out.Has5h = u5, true
		}
		if u7 >= 0 {
			out.Utilization7d, out.Has7d = u7, true
		}
		return out
	}
	tests := []struct {
		name      string
		limits    usage.PlanLimits
		threshold float64
		until     time.Time
		ok        bool
	}{
		{"off", l(1, 1), 0, time.Time{}, false},
		{"below", l(0.94, 0.5), 0.95, time.Time{}, false},
		{"5h at the threshold", l(0.95, 0.5), 0.95, r5, true},
		{"7d above", l(0.2, 0.99), 0.95, r7, true},
		{"both: the later reset", l(0.97, 0.96), 0.95, r7, true},
		{"no readings", l(-1, -1), 0.5, time.Time{}, false},
		{"above without a reset", usage.PlanLimits{Utilization5h: 0.99, Has5h: true}, 0.95, time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			until, ok := Preempt(tt.limits, tt.threshold)
			if ok != tt.ok || !until.Equal(tt.until) {
				t.Fatalf("Preempt = %s, %v; want %s, %v", until, ok, tt.until, tt.ok)
			}
		})
	}
}

func FuzzUnifiedLimits(f *testing.F) {
	f.Add("allowed", "five_hour", "0.42", "1772384400", "1", "1772384400000", "")
	f.Add("", "", "", "", "", "", "")
	f.Add("rejected\x00", "ÿ", "1e9", "-5", "NaN", "99999999999999999999", " 12 ")
	f.Fuzz(func(t *testing.T, status, claim, u5, r5, u7, r7, r string) {
		u := unified(HeaderUnifiedStatus, status, HeaderUnifiedClaim, claim, HeaderUnified5hUtil, u5,
			HeaderUnified5hReset, r5, HeaderUnified7dUtil, u7, HeaderUnified7dReset, r7, HeaderUnifiedReset, r)
		l := u.Limits()
		for _, x := range []struct {
			has bool
			v   float64
		}{{l.Has5h, l.Utilization5h}, {l.Has7d, l.Utilization7d}} {
			if x.has && (math.IsNaN(x.v) || x.v < 0 || x.v > maxUtilization) {
				t.Fatalf("utilization %v accepted", x.v)
			}
		}
		for _, s := range []string{l.Status, l.Claim} {
			if len(s) > 32 {
				t.Fatalf("token %q too long", s)
			}
			for _, c := range []byte(s) {
				if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
					t.Fatalf("token %q has byte %q", s, c)
				}
			}
		}
		for _, tm := range []time.Time{l.Reset, l.Reset5h, l.Reset7d} {
			if !tm.IsZero() && (tm.Year() < 1970 || tm.Year() > 33658) {
				t.Fatalf("reset %s", tm)
			}
		}
	})
}
