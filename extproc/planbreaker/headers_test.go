package planbreaker

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

var hnow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) // unix 1772366400

func headerFunc(kv ...string) func(string) string {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h.Get
}

func TestResetFromHeaders(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    time.Time
	}{
		{"none", nil, time.Time{}},
		{"retry-after seconds", []string{"retry-after", "120"}, hnow.Add(120 * time.Second)},
		{"retry-after zero", []string{"retry-after", "0"}, hnow},
		{"retry-after spaces", []string{"Retry-After", " 30 "}, hnow.Add(30 * time.Second)},
		{"retry-after http date", []string{"retry-after", "Sun, 01 Mar 2026 12:05:00 GMT"}, hnow.Add(5 * time.Minute)},
		{"retry-after negative", []string{"retry-after", "-5"}, time.Time{}},
		{"retry-after fraction", []string{"retry-after", "1.5"}, time.Time{}},
		{"retry-after garbage", []string{"retry-after", "soon"}, time.Time{}},
		{"retry-after huge", []string{"retry-after", "99999999999999999999999"}, hnow.Add(maxRetryAfter * time.Second)},
		{"unified reset unix seconds", []string{"anthropic-ratelimit-unified-reset", "1772370000"}, hnow.Add(time.Hour)},
		{"unified reset unix ms", []string{"anthropic-ratelimit-unified-reset", "1772370000500"}, hnow.Add(time.Hour + 500*time.Millisecond)},
		{"unified reset rfc3339", []string{"anthropic-ratelimit-unified-reset", "2026-03-01T13:00:00Z"}, hnow.Add(time.Hour)},
		{"unified reset when rejected", []string{
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", "1772370000",
			"retry-after", "60",
		}, hnow.Add(time.Hour)},
		{"unified reset ignored when allowed", []string{
			"anthropic-ratelimit-unified-status", "allowed",
			"anthropic-ratelimit-unified-reset", "1772370000",
			"retry-after", "60",
		}, hnow.Add(time.Minute)},
		{"unified reset ignored when allowed_warning", []string{
			"anthropic-ratelimit-unified-status", "allowed_warning",
			"anthropic-ratelimit-unified-reset", "1772370000",
		}, time.Time{}},
		{"unified reset garbage", []string{"anthropic-ratelimit-unified-reset", "12:00"}, time.Time{}},
		{"requests reset rfc3339", []string{"anthropic-ratelimit-requests-reset", "2026-03-01T12:00:42Z"}, hnow.Add(42 * time.Second)},
		{"latest wins", []string{
			"retry-after", "10",
			"anthropic-ratelimit-requests-reset", "2026-03-01T12:00:20Z",
			"anthropic-ratelimit-tokens-reset", "2026-03-01T12:00:30+00:00",
			"anthropic-ratelimit-input-tokens-reset", "2026-03-01T12:00:25Z",
			"anthropic-ratelimit-output-tokens-reset", "2026-03-01T11:00:00Z",
		}, hnow.Add(30 * time.Second)},
		{"offset zone", []string{"anthropic-ratelimit-tokens-reset", "2026-03-01T13:00:07+01:00"}, hnow.Add(7 * time.Second)},
		{"bad rfc3339 ignored", []string{"anthropic-ratelimit-requests-reset", "2026-03-01 12:00:20", "retry-after", "5"}, hnow.Add(5 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ResetFromHeaders(headerFunc(tt.headers...), hnow)
			if !got.Equal(tt.want) {
				t.Fatalf("ResetFromHeaders = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestLimitExhausted(t *testing.T) {
	tests := []struct {
		headers []string
		want    bool
	}{
		{nil, false},
		{[]string{"anthropic-ratelimit-unified-status", "allowed"}, false},
		{[]string{"anthropic-ratelimit-unified-status", "allowed_warning"}, false},
		{[]string{"anthropic-ratelimit-unified-status", "rejected"}, true},
		{[]string{"anthropic-ratelimit-unified-status", " Rejected "}, true},
		{[]string{"anthropic-ratelimit-requests-remaining", "0"}, true},
		{[]string{"anthropic-ratelimit-requests-remaining", "1"}, false},
		{[]string{"anthropic-ratelimit-tokens-remaining", "0"}, true},
		{[]string{"anthropic-ratelimit-input-tokens-remaining", "-3"}, true},
		{[]string{"anthropic-ratelimit-output-tokens-remaining", "12000"}, false},
		{[]string{"anthropic-ratelimit-tokens-remaining", "none"}, false},
	}
	for _, tt := range tests {
		if got := LimitExhausted(headerFunc(tt.headers...)); got != tt.want {
			t.Errorf("LimitExhausted(%q) = %v, want %v", tt.headers, got, tt.want)
		}
	}
}

// FuzzResetFromHeaders: untrusted header values never panic, the result is
// the latest of what each header alone yields, RateLimited's clamp always
// lands in [now+MinOpen, now+MaxOpen], and LimitExhausted holds exactly
// when the unified status is "rejected" or the remaining count is an
// integer <= 0.
func FuzzResetFromHeaders(f *testing.F) {
	f.Add("120", "", "", "", "", "")
	f.Add("Sun, 01 Mar 2026 12:05:00 GMT", "rejected", "1772370000", "2026-03-01T12:00:20Z", "2026-03-01T12:00:30+00:00", "5")
	f.Add("", "allowed", "1772370000500", "", "", "0")
	f.Add("99999999999999999999999", "", "9223372036854775807", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", " -3 ")
	f.Add("-1", "REJECTED", "-9223372036854775808", "x", "2026-02-30T25:61:61Z", "none")
	f.Add("", " Rejected\t", "", "", "", "-9223372036854775809")
	b := &Breaker{cfg: Config{DefaultOpen: DefaultDefaultOpen, MaxOpen: DefaultMaxOpen}}
	f.Fuzz(func(t *testing.T, retryAfter, status, unified, requests, tokens, remaining string) {
		all := []string{
			HeaderRetryAfter, retryAfter,
			HeaderUnifiedStatus, status,
			HeaderUnifiedReset, unified,
			"anthropic-ratelimit-requests-reset", requests,
			"anthropic-ratelimit-tokens-reset", tokens,
			"anthropic-ratelimit-tokens-remaining", remaining,
		}
		get := func(kv []string) func(string) string {
			return func(name string) string {
				for i := 0; i < len(kv); i += 2 {
					if kv[i] == name {
						return kv[i+1]
					}
				}
				return ""
			}
		}
		got := ResetFromHeaders(get(all), hnow)
		var want time.Time
		for _, kv := range [][]string{all[0:2], all[2:6], all[6:8], all[8:10]} {
			if r := ResetFromHeaders(get(kv), hnow); r.After(want) {
				want = r
			}
		}
		if !got.Equal(want) {
			t.Fatalf("ResetFromHeaders = %s, want the latest single header's %s", got, want)
		}
		until := b.clampReset(hnow, got)
		if until.Before(hnow.Add(MinOpen)) || until.After(hnow.Add(DefaultMaxOpen)) {
			t.Fatalf("clamped reset %s outside [now+%s, now+%s]", until, MinOpen, DefaultMaxOpen)
		}
		rejected := strings.EqualFold(strings.TrimSpace(status), "rejected")
		n, err := strconv.ParseInt(strings.TrimSpace(remaining), 10, 64)
		usedUp := err == nil && n <= 0
		if got := LimitExhausted(get(all)); got != (rejected || usedUp) {
			t.Fatalf("LimitExhausted(status %q, remaining %q) = %v, want %v", status, remaining, got, rejected || usedUp)
		}
	})
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status  int
		headers []string
		want    Outcome
	}{
		{200, nil, OutcomeSuccess},
		{200, []string{"anthropic-ratelimit-unified-status", "allowed"}, OutcomeSuccess},
		{200, []string{"anthropic-ratelimit-unified-status", "rejected"}, OutcomeRateLimited},
		{200, []string{"anthropic-ratelimit-requests-remaining", "0"}, OutcomeRateLimited},
		{400, nil, OutcomeSuccess},
		{401, nil, OutcomeSuccess},
		{404, nil, OutcomeSuccess},
		{429, nil, OutcomeRateLimited},
		{500, nil, OutcomeFailure},
		{501, nil, OutcomeSuccess},
		{502, nil, OutcomeFailure},
		{503, nil, OutcomeFailure},
		{504, nil, OutcomeFailure},
		{529, nil, OutcomeFailure},
		{529, []string{"anthropic-ratelimit-unified-status", "rejected"}, OutcomeFailure},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, headerFunc(tt.headers...)); got != tt.want {
			t.Errorf("Classify(%d, %q) = %s, want %s", tt.status, tt.headers, got, tt.want)
		}
	}
	for o, want := range map[Outcome]string{OutcomeSuccess: "success", OutcomeFailure: "failure", OutcomeRateLimited: "rate_limited", 9: "Outcome(9)"} {
		if o.String() != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), o.String(), want)
		}
	}
}
