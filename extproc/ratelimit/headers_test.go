package ratelimit

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHeaders(t *testing.T) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tc := range []struct {
		name string
		d    Decision
		want []Header
	}{
		{
			name: "requests only",
			d: Decision{RetryAfter: 11*time.Second + 500*time.Millisecond, Now: now,
				Most: [numDimensions]Bucket{Requests: {Limit: 5, Remaining: 0, Reset: at(59*time.Second + 1)}}},
			want: []Header{
				{"retry-after", "12"},
				{"anthropic-ratelimit-requests-limit", "5"},
				{"anthropic-ratelimit-requests-remaining", "0"},
				{"anthropic-ratelimit-requests-reset", "2026-12-07T18:01:00Z"},
			},
		},
		{
			name: "tokens: output the more restrictive share",
			d: Decision{RetryAfter: 30 * time.Second, Now: now, Most: [numDimensions]Bucket{
				InputTokens:  {Limit: 1000, Remaining: 100, Reset: at(54 * time.Second)},
				OutputTokens: {Limit: 100, Remaining: 5, Reset: at(57 * time.Second)},
			}},
			want: []Header{
				{"retry-after", "30"},
				{"anthropic-ratelimit-input-tokens-limit", "1000"},
				{"anthropic-ratelimit-input-tokens-remaining", "100"},
				{"anthropic-ratelimit-input-tokens-reset", "2026-12-07T18:00:54Z"},
				{"anthropic-ratelimit-output-tokens-limit", "100"},
				{"anthropic-ratelimit-output-tokens-remaining", "5"},
				{"anthropic-ratelimit-output-tokens-reset", "2026-12-07T18:00:57Z"},
				{"anthropic-ratelimit-tokens-limit", "100"},
				{"anthropic-ratelimit-tokens-remaining", "5"},
				{"anthropic-ratelimit-tokens-reset", "2026-12-07T18:00:57Z"},
			},
		},
		{
			name: "tokens: input only; sub-second wait rounds up to 1",
			d: Decision{RetryAfter: time.Microsecond, Now: now, Most: [numDimensions]Bucket{
				Requests:    {Limit: 60, Remaining: 59, Reset: at(time.Second)},
				InputTokens: {Limit: 2_000_000, Remaining: 0, Reset: at(3 * time.Minute)},
			}},
			want: []Header{
				{"retry-after", "1"},
				{"anthropic-ratelimit-requests-limit", "60"},
				{"anthropic-ratelimit-requests-remaining", "59"},
				{"anthropic-ratelimit-requests-reset", "2026-12-07T18:00:01Z"},
				{"anthropic-ratelimit-input-tokens-limit", "2000000"},
				{"anthropic-ratelimit-input-tokens-remaining", "0"},
				{"anthropic-ratelimit-input-tokens-reset", "2026-12-07T18:03:00Z"},
				{"anthropic-ratelimit-tokens-limit", "2000000"},
				{"anthropic-ratelimit-tokens-remaining", "0"},
				{"anthropic-ratelimit-tokens-reset", "2026-12-07T18:03:00Z"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.d.Headers()
			if len(got) != len(tc.want) {
				t.Fatalf("got %d headers %v; want %v", len(got), got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("header %d = %v; want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		want int64
	}{
		{-time.Second, 1}, {0, 1}, {time.Nanosecond, 1}, {time.Second, 1},
		{time.Second + time.Nanosecond, 2}, {12 * time.Second, 12}, {90 * time.Minute, 5400},
	} {
		if got := RetryAfterSeconds(tc.wait); got != tc.want {
			t.Errorf("RetryAfterSeconds(%s) = %d; want %d", tc.wait, got, tc.want)
		}
	}
}

// FuzzHeaders: whatever the buckets hold (Redis state is shared, and a
// corrupted or extreme value must not produce a malformed header), every
// header is a known name with a valid value: a positive integer for
// retry-after, non-negative integers for limits and remaining, RFC 3339 UTC
// for resets, and no byte outside visible ASCII.
func FuzzHeaders(f *testing.F) {
	f.Add(int64(12_000_000), int64(5), int64(0), int64(59_000_000), int64(1000), int64(-3), int64(-1), int64(100), int64(5), int64(1))
	f.Add(int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0))
	f.Add(int64(-1), int64(1<<62), int64(1<<62), int64(1<<40), int64(1), int64(1<<62), int64(-(1 << 40)), int64(7), int64(-7), int64(1<<50))
	f.Fuzz(func(t *testing.T, retry, rl, rr, rreset, il, ir, ireset, ol, or, oreset int64) {
		now := time.UnixMicro(1_765_000_000_000_000)
		d := Decision{RetryAfter: time.Duration(retry % (1 << 50)), Now: now, Most: [numDimensions]Bucket{
			{Limit: rl, Remaining: rr, Reset: now.Add(time.Duration(rreset % (1 << 50)))},
			{Limit: il, Remaining: ir, Reset: now.Add(time.Duration(ireset % (1 << 50)))},
			{Limit: ol, Remaining: or, Reset: now.Add(time.Duration(oreset % (1 << 50)))},
		}}
		hs := d.Headers()
		if len(hs) == 0 || hs[0].Name != "retry-after" {
			t.Fatalf("first header %v; want retry-after", hs)
		}
		seen := map[string]bool{}
		for _, h := range hs {
			if seen[h.Name] {
				t.Fatalf("header %q twice", h.Name)
			}
			seen[h.Name] = true
			for _, c := range []byte(h.Value) {
				if c <= ' ' || c > '~' {
					t.Fatalf("header %q has byte %#x", h.Name, c)
				}
			}
			switch {
			case h.Name == "retry-after":
				if n, err := strconv.ParseInt(h.Value, 10, 64); err != nil || n < 1 {
					t.Fatalf("retry-after %q", h.Value)
				}
			case strings.HasSuffix(h.Name, "-reset"):
				if _, err := time.Parse(time.RFC3339, h.Value); err != nil || !strings.HasSuffix(h.Value, "Z") {
					t.Fatalf("%s %q: %v", h.Name, h.Value, err)
				}
			case strings.HasSuffix(h.Name, "-limit"), strings.HasSuffix(h.Name, "-remaining"):
				if n, err := strconv.ParseInt(h.Value, 10, 64); err != nil || n < 0 && strings.HasSuffix(h.Name, "-remaining") {
					t.Fatalf("%s %q", h.Name, h.Value)
				}
			default:
				t.Fatalf("unexpected header %q", h.Name)
			}
			if !strings.HasPrefix(h.Name, "anthropic-ratelimit-") && h.Name != "retry-after" {
				t.Fatalf("unexpected header %q", h.Name)
			}
		}
	})
}
