package planbreaker

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response headers read by ResetFromHeaders and LimitExhausted (lower case,
// as Envoy passes them; http.Header.Get canonicalises).
const (
	HeaderRetryAfter    = "retry-after"
	HeaderUnifiedStatus = "anthropic-ratelimit-unified-status"
	HeaderUnifiedReset  = "anthropic-ratelimit-unified-reset"
)

// rateLimitKinds are the kinds of anthropic-ratelimit-<kind>-remaining and
// -reset (RFC 3339 times).
var rateLimitKinds = []string{"requests", "tokens", "input-tokens", "output-tokens"}

// maxRetryAfter bounds retry-after seconds so the arithmetic cannot
// overflow; RateLimited caps the result at MaxOpen anyway.
const maxRetryAfter = 1 << 32

// ResetFromHeaders returns when a Plan response says its rate limit resets:
// the latest of
//
//   - retry-after: delay-seconds (digits only) after now, or an HTTP date;
//   - anthropic-ratelimit-unified-reset: unix seconds (the subscription
//     limit's representative window; values of 10^12 and above are read as
//     unix milliseconds, RFC 3339 is accepted too), but only when
//     anthropic-ratelimit-unified-status is absent or "rejected": every
//     subscription response carries the unified reset, hours away, and a
//     per-minute throttle under an "allowed" unified status must not keep
//     the key on Bedrock until then;
//   - anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset:
//     RFC 3339.
//
// Values that do not parse are ignored (the headers are untrusted); the
// zero time means none was usable, for which RateLimited opens for
// DefaultOpen. The result may lie in the past or far ahead: RateLimited
// clamps it. get looks a header up by lower-case name ("" when absent), e.g.
// http.Header.Get or a lookup over Envoy's header map.
func ResetFromHeaders(get func(name string) string, now time.Time) time.Time {
	var latest time.Time
	consider := func(t time.Time, ok bool) {
		if ok && t.After(latest) {
			latest = t
		}
	}
	consider(parseRetryAfter(get(HeaderRetryAfter), now))
	if s := strings.TrimSpace(get(HeaderUnifiedStatus)); s == "" || strings.EqualFold(s, "rejected") {
		consider(parseUnixReset(get(HeaderUnifiedReset)))
	}
	for _, k := range rateLimitKinds {
		consider(parseRFC3339(get("anthropic-ratelimit-" + k + "-reset")))
	}
	return latest
}

// LimitExhausted reports whether a Plan response announces that its limit
// is used up even though it may be a success: anthropic-ratelimit-unified-
// status is "rejected", or one of anthropic-ratelimit-{requests,tokens,
// input-tokens,output-tokens}-remaining is 0. The caller then reports
// RateLimited instead of Success.
func LimitExhausted(get func(name string) string) bool {
	if strings.EqualFold(strings.TrimSpace(get(HeaderUnifiedStatus)), "rejected") {
		return true
	}
	for _, k := range rateLimitKinds {
		if v := strings.TrimSpace(get("anthropic-ratelimit-" + k + "-remaining")); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n <= 0 {
				return true
			}
		}
	}
	return false
}

func parseRetryAfter(v string, now time.Time) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	if isDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > maxRetryAfter {
			n = maxRetryAfter // all digits, so only too large
		}
		return now.Add(time.Duration(n) * time.Second), true
	}
	t, err := http.ParseTime(v)
	return t, err == nil
}

func parseUnixReset(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	if isDigits(v) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		if n >= 1e12 {
			return time.UnixMilli(n), true
		}
		return time.Unix(n, 0), true
	}
	return parseRFC3339(v)
}

func parseRFC3339(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v)
	return t, err == nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Outcome is how a Plan attempt's answer counts for the breaker.
type Outcome int

// Outcomes.
const (
	// OutcomeSuccess: report Success.
	OutcomeSuccess Outcome = iota
	// OutcomeFailure: report Failure.
	OutcomeFailure
	// OutcomeRateLimited: report RateLimited with ResetFromHeaders.
	OutcomeRateLimited
)

// String returns success, failure or rate_limited.
func (o Outcome) String() string {
	switch o {
	case OutcomeSuccess:
		return "success"
	case OutcomeFailure:
		return "failure"
	case OutcomeRateLimited:
		return "rate_limited"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Classify maps a Plan response's status and headers to an Outcome
// (docs/design.md, "The circuit breaker"): 429, or any response for which
// LimitExhausted holds, is rate limited; 500, 502, 503, 504 and 529 are
// failures; everything else, other 4xx included (the client's problem,
// and proof that Plan answers), is a success. Connect failures, resets and
// timeouts have no response: report Failure for them directly.
func Classify(status int, get func(name string) string) Outcome {
	switch status {
	case http.StatusTooManyRequests:
		return OutcomeRateLimited
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, 529:
		return OutcomeFailure
	}
	if LimitExhausted(get) {
		return OutcomeRateLimited
	}
	return OutcomeSuccess
}
