package planbreaker

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ccproxy/ccproxy/internal/usage"
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

// UnifiedPrefix starts every subscription rate-limit response header.
const UnifiedPrefix = "anthropic-ratelimit-unified-"

// The unified headers read besides HeaderUnifiedStatus and
// HeaderUnifiedReset (lower case). Utilizations are fractions ("0.42"; 1 is
// the limit), resets unix seconds.
const (
	HeaderUnifiedClaim   = "anthropic-ratelimit-unified-representative-claim"
	HeaderUnified5hUtil  = "anthropic-ratelimit-unified-5h-utilization"
	HeaderUnified5hReset = "anthropic-ratelimit-unified-5h-reset"
	HeaderUnified7dUtil  = "anthropic-ratelimit-unified-7d-utilization"
	HeaderUnified7dReset = "anthropic-ratelimit-unified-7d-reset"
)

// UnifiedHeaders collects the raw values of one response's unified
// rate-limit headers without copying them (the slices alias the header
// map), for Limits to parse. The zero value is empty.
type UnifiedHeaders struct {
	status, claim, util5h, reset5h, util7d, reset7d, reset []byte
}

// Set keeps v when name (lower case) is one of the unified headers read
// and reports whether it was. The first value of a repeated header wins.
func (u *UnifiedHeaders) Set(name string, v []byte) bool {
	var dst *[]byte
	switch name {
	case HeaderUnifiedStatus:
		dst = &u.status
	case HeaderUnifiedClaim:
		dst = &u.claim
	case HeaderUnified5hUtil:
		dst = &u.util5h
	case HeaderUnified5hReset:
		dst = &u.reset5h
	case HeaderUnified7dUtil:
		dst = &u.util7d
	case HeaderUnified7dReset:
		dst = &u.reset7d
	case HeaderUnifiedReset:
		dst = &u.reset
	default:
		return false
	}
	if *dst == nil {
		*dst = v
	}
	return true
}

// Empty reports whether no unified header was set.
func (u *UnifiedHeaders) Empty() bool {
	return u.status == nil && u.claim == nil && u.util5h == nil && u.reset5h == nil &&
		u.util7d == nil && u.reset7d == nil && u.reset == nil
}

// UnifiedFrom collects the unified headers through get (see
// ResetFromHeaders). It copies the values.
func UnifiedFrom(get func(name string) string) UnifiedHeaders {
	var u UnifiedHeaders
	for _, n := range []string{HeaderUnifiedStatus, HeaderUnifiedClaim, HeaderUnified5hUtil, HeaderUnified5hReset,
		HeaderUnified7dUtil, HeaderUnified7dReset, HeaderUnifiedReset} {
		if v := get(n); v != "" {
			u.Set(n, []byte(v))
		}
	}
	return u
}

// maxUtilization bounds a utilization Limits accepts; a larger value is
// garbage, not a reading.
const maxUtilization = 100

// Limits parses the collected values. The headers are untrusted: a value
// that does not parse is left out (a utilization must be a plain decimal
// in [0, 100], a reset unix seconds or milliseconds), and a status or claim
// longer than 32 bytes or with bytes outside [a-z0-9_] is dropped. Known
// statuses and claims do not allocate.
func (u *UnifiedHeaders) Limits() usage.PlanLimits {
	var l usage.PlanLimits
	l.Status = token(u.status)
	l.Claim = token(u.claim)
	l.Utilization5h, l.Has5h = parseFraction(u.util5h)
	l.Utilization7d, l.Has7d = parseFraction(u.util7d)
	l.Reset5h = parseUnixBytes(u.reset5h)
	l.Reset7d = parseUnixBytes(u.reset7d)
	l.Reset = parseUnixBytes(u.reset)
	return l
}

// Preempt reports whether l puts the subscription at or above threshold
// (a fraction; 0 or less never preempts) in the 5-hour or the 7-day
// window, and until when: the latest reset among the windows at or above
// it (zero when none was announced). A rejected status is not preemption:
// it is a rate limit (Classify).
func Preempt(l usage.PlanLimits, threshold float64) (time.Time, bool) {
	if threshold <= 0 {
		return time.Time{}, false
	}
	var until time.Time
	hit := false
	if l.Has5h && l.Utilization5h >= threshold {
		hit, until = true, l.Reset5h
	}
	if l.Has7d && l.Utilization7d >= threshold {
		hit = true
		if l.Reset7d.After(until) {
			until = l.Reset7d
		}
	}
	return until, hit
}

// token returns a status or claim; the ones Anthropic sends are constants
// (string(v) in a switch does not allocate), others are copied.
func token(v []byte) string {
	v = trimSpace(v)
	if len(v) == 0 || len(v) > 32 {
		return ""
	}
	switch string(v) {
	case usage.PlanStatusAllowed:
		return usage.PlanStatusAllowed
	case usage.PlanStatusAllowedWarning:
		return usage.PlanStatusAllowedWarning
	case usage.PlanStatusRejected:
		return usage.PlanStatusRejected
	case "five_hour":
		return "five_hour"
	case "seven_day":
		return "seven_day"
	case "seven_day_opus":
		return "seven_day_opus"
	case "seven_day_sonnet":
		return "seven_day_sonnet"
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return ""
		}
	}
	return string(v)
}

func trimSpace(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// parseFraction parses a plain decimal ("1", "0.42", ".5") in [0,
// maxUtilization] with at most 9 fractional digits, without allocating.
func parseFraction(v []byte) (float64, bool) {
	v = trimSpace(v)
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	var whole, frac, scale int64 = 0, 0, 1
	digits, i := 0, 0
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		whole = whole*10 + int64(v[i]-'0')
		digits++
		if whole > maxUtilization {
			return 0, false
		}
	}
	if i < len(v) && v[i] == '.' {
		i++
		for n := 0; i < len(v) && v[i] >= '0' && v[i] <= '9'; i, n = i+1, n+1 {
			if n >= 9 {
				return 0, false
			}
			frac = frac*10 + int64(v[i]-'0')
			scale *= 10
			digits++
		}
	}
	if i != len(v) || digits == 0 {
		return 0, false
	}
	f := float64(whole) + float64(frac)/float64(scale)
	if f > maxUtilization {
		return 0, false
	}
	return f, true
}

// parseUnixBytes parses unix seconds (milliseconds from 10^12 on) without
// allocating; zero when v is not a plain positive integer below 10^15.
func parseUnixBytes(v []byte) time.Time {
	v = trimSpace(v)
	if len(v) == 0 || len(v) > 15 {
		return time.Time{}
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return time.Time{}
		}
		n = n*10 + int64(c-'0')
	}
	if n == 0 {
		return time.Time{}
	}
	if n >= 1e12 {
		return time.UnixMilli(n).UTC()
	}
	return time.Unix(n, 0).UTC()
}
