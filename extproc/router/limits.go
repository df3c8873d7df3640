package router

import (
	"strconv"
	"sync"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/apierror"
)

// Per-access-key limits, enforced before a request goes upstream.
//
// The concurrency limit is counted per extproc process, not in Redis: a slot is taken when a
// request is let through and given back when its stream ends, which a process that dies
// cannot do for a shared counter (slots would leak until a lease expired), and a Redis round
// trip per request would put Redis on every request's path. Each gateway pod's extproc counts
// the requests its Envoy carries, so a key may have up to the limit in flight on every pod;
// size the limit for one pod and expect at most limit × pods overall.

// Limits bound what one access key may have the gateway do.
type Limits struct {
	// MaxConcurrentPerKey is the number of requests of one access key that may be in
	// flight through this extproc at once; more get 429. 0 means no limit.
	MaxConcurrentPerKey int
	// MaxRequestBodyBytes is the largest request body forwarded; larger ones get 413.
	// 0 means no limit of the gateway's own (Envoy's buffer limit still applies).
	MaxRequestBodyBytes int64
}

// keySlots counts the in-flight requests of each access key.
type keySlots struct {
	max int
	mu  sync.Mutex
	n   map[uuid.UUID]int
}

func newKeySlots(max int) *keySlots { return &keySlots{max: max, n: make(map[uuid.UUID]int)} }

// acquire takes a slot for key, reporting false when the key has max in flight.
func (s *keySlots) acquire(key uuid.UUID) bool {
	if s.max <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[key] >= s.max {
		return false
	}
	s.n[key]++
	return true
}

// release gives a slot of key back.
func (s *keySlots) release(key uuid.UUID) {
	if s.max <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[key] <= 1 {
		delete(s.n, key)
		return
	}
	s.n[key]--
}

// tooManyConcurrent is the refusal of a request over the key's concurrency limit: a 429
// Claude Code retries after a second (x-should-retry true, retry-after 1), in the format of
// the API the client speaks.
func (p *Processor) tooManyConcurrent() *extprocv3.ProcessingResponse {
	p.r.metrics.request(OutcomeConcurrencyLimited)
	msg := "ccproxy: too many concurrent requests for this access key (limit " + strconv.Itoa(p.r.limits.MaxConcurrentPerKey) + "); retry shortly"
	var resp *extprocv3.ProcessingResponse
	if p.isBedrockMode() {
		resp = bedrockReply(429, "ThrottlingException", msg)
	} else {
		resp = immediate(429, apierror.RateLimit, msg, "ccproxy_key_concurrency_limit")
	}
	ir := resp.GetImmediateResponse()
	ir.Details = "ccproxy_key_concurrency_limit"
	hs := ir.GetHeaders().GetSetHeaders()
	for _, h := range hs {
		if h.GetHeader().GetKey() == "x-should-retry" {
			h.Header.RawValue = []byte("true")
		}
	}
	ir.Headers.SetHeaders = append(hs, setHeader("retry-after", []byte("1")))
	return resp
}

// tooLarge is the refusal of a request body over MaxRequestBodyBytes: a 413 that is not
// retried.
func (p *Processor) tooLarge() *extprocv3.ProcessingResponse {
	p.r.metrics.request(OutcomeTooLarge)
	msg := "ccproxy: request body too large: the gateway accepts at most " + strconv.FormatInt(p.r.limits.MaxRequestBodyBytes, 10) + " bytes"
	if p.isBedrockMode() {
		resp := bedrockReply(413, "ValidationException", msg)
		resp.GetImmediateResponse().Details = "ccproxy_request_too_large"
		return resp
	}
	return immediate(413, apierror.RequestTooLarge, msg, "ccproxy_request_too_large")
}

// isBedrockMode reports whether the client speaks Bedrock's API (Claude Code's Bedrock mode).
func (p *Processor) isBedrockMode() bool {
	k := p.req.kind
	return k == pathBedrockModel || k == pathBedrockProfiles || k == pathBedrockOther
}
