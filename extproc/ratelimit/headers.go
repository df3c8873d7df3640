package ratelimit

import (
	"time"
)

// Header is one response header.
type Header struct {
	Name, Value string
}

// Response headers of a refusal, as Anthropic's API names them
// (docs/design.md, "Rate limits"): the limit, what remains and when the
// bucket is full again (RFC 3339, UTC, whole seconds rounded up) for
// requests, input tokens, output tokens, and tokens — the more restrictive
// of the two token limits.
const (
	HeaderRetryAfter = "retry-after"
	headerPrefix     = "anthropic-ratelimit-"
)

// headerName is a dimension's part of the anthropic-ratelimit-* names.
func (d Dimension) headerName() string {
	switch d {
	case InputTokens:
		return "input-tokens"
	case OutputTokens:
		return "output-tokens"
	}
	return "requests"
}

// Headers returns the headers of a refusal for d: retry-after (whole
// seconds, rounded up, at least 1) and the anthropic-ratelimit-* headers of
// every limited dimension. Headers of allowed requests are not rendered:
// a Plan answer carries Anthropic's own headers of those names, which the
// gateway leaves alone.
func (d Decision) Headers() []Header {
	hs := make([]Header, 0, 1+3*4)
	hs = append(hs, Header{HeaderRetryAfter, itoa(RetryAfterSeconds(d.RetryAfter))})
	for dim, b := range d.Most {
		if b.Limit > 0 {
			hs = appendBucket(hs, Dimension(dim).headerName(), b)
		}
	}
	if b, ok := d.tokens(); ok {
		hs = appendBucket(hs, "tokens", b)
	}
	return hs
}

// tokens is the more restrictive token bucket: the one with the smaller
// share left, which is the one a client must slow down for.
func (d Decision) tokens() (Bucket, bool) {
	in, out := d.Most[InputTokens], d.Most[OutputTokens]
	switch {
	case in.Limit == 0 && out.Limit == 0:
		return Bucket{}, false
	case in.Limit == 0:
		return out, true
	case out.Limit == 0:
		return in, true
	}
	// in.Remaining/in.Limit <= out.Remaining/out.Limit, without division.
	l, r := float64(in.Remaining)*float64(out.Limit), float64(out.Remaining)*float64(in.Limit)
	if l < r || (l == r && !in.Reset.Before(out.Reset)) {
		return in, true
	}
	return out, true
}

func appendBucket(hs []Header, name string, b Bucket) []Header {
	return append(hs,
		Header{headerPrefix + name + "-limit", itoa(b.Limit)},
		Header{headerPrefix + name + "-remaining", itoa(max(b.Remaining, 0))},
		Header{headerPrefix + name + "-reset", resetString(b.Reset)},
	)
}

// RetryAfterSeconds is the retry-after value of a wait: whole seconds,
// rounded up, at least 1 (0 would invite an immediate retry that is
// refused again).
func RetryAfterSeconds(wait time.Duration) int64 {
	s := int64((wait + time.Second - 1) / time.Second)
	return max(s, 1)
}

// resetString formats a reset instant: RFC 3339 in UTC, rounded up to the
// second so that a client waiting until then finds room.
func resetString(t time.Time) string {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	if r := t.Truncate(time.Second); !r.Equal(t) {
		t = r.Add(time.Second)
	}
	return t.UTC().Format(time.RFC3339)
}
