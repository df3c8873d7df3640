package metering

import (
	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// counts accumulates Anthropic usage objects. Streams report usage twice
// (message_start, then cumulative message_delta), and each field present in
// a later object replaces the earlier value; absent, null or non-integer
// fields leave it alone.
type counts struct {
	input, output, cacheRead, cacheCreate int64
	eph5m, eph1h                          int64
	// split records that a cache_creation object was seen: its per-lifetime
	// counts then take precedence over cache_creation_input_tokens.
	split bool
}

// apply merges the usage object raw into c. When a key repeats, its last
// occurrence counts, as with encoding/json.
func (c *counts) apply(raw []byte) {
	var in, out, read, create, split []byte
	it := jsonscan.Object(raw)
	for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
		switch {
		case jsonscan.KeyIs(k, "input_tokens"):
			in = v
		case jsonscan.KeyIs(k, "output_tokens"):
			out = v
		case jsonscan.KeyIs(k, "cache_read_input_tokens"):
			read = v
		case jsonscan.KeyIs(k, "cache_creation_input_tokens"):
			create = v
		case jsonscan.KeyIs(k, "cache_creation"):
			split = v
		}
	}
	setUint(&c.input, in)
	setUint(&c.output, out)
	setUint(&c.cacheRead, read)
	setUint(&c.cacheCreate, create)
	if len(split) == 0 || split[0] != '{' {
		return
	}
	c.split = true
	var e5, e1 []byte
	cc := jsonscan.Object(split)
	for k, v, ok := cc.Next(); ok; k, v, ok = cc.Next() {
		switch {
		case jsonscan.KeyIs(k, "ephemeral_5m_input_tokens"):
			e5 = v
		case jsonscan.KeyIs(k, "ephemeral_1h_input_tokens"):
			e1 = v
		}
	}
	setUint(&c.eph5m, e5)
	setUint(&c.eph1h, e1)
}

func setUint(dst *int64, raw []byte) {
	if n, ok := jsonscan.Uint(raw); ok {
		*dst = n
	}
}

func (c *counts) usage() usage.Usage {
	u := usage.Usage{
		InputTokens:          c.input,
		OutputTokens:         c.output,
		CacheReadInputTokens: c.cacheRead,
	}
	if c.split {
		u.CacheWrite5mInputTokens = c.eph5m
		u.CacheWrite1hInputTokens = c.eph1h
	} else {
		u.CacheWrite5mInputTokens = c.cacheCreate
	}
	return u
}

// FromJSON extracts the usage of a non-streaming Messages response: the
// body's top-level "usage" object. ok is false when there is none.
func FromJSON(body []byte) (u usage.Usage, ok bool) {
	raw, ok := jsonscan.Find(body, "usage")
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return usage.Usage{}, false
	}
	var c counts
	c.apply(raw)
	return c.usage(), true
}

// CountedTokens extracts the answer of a count_tokens request,
// {"input_tokens":N}. ok is false when the body holds no such count.
func CountedTokens(body []byte) (n int64, ok bool) {
	raw, ok := jsonscan.Find(body, "input_tokens")
	if !ok {
		return 0, false
	}
	return jsonscan.Uint(raw)
}

// ModelFromJSON returns the top-level "model" of a non-streaming Messages
// response, "" when there is none.
func ModelFromJSON(body []byte) string {
	raw, ok := jsonscan.Find(body, "model")
	if !ok {
		return ""
	}
	m, _ := jsonscan.String(raw)
	return m
}
