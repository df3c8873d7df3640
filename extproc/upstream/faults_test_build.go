//go:build ccproxyfaults

package upstream

import (
	"bytes"
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// This file exists only in test builds (go build -tags ccproxyfaults, which
// the end-to-end tests use): it lets a test make the upstream processor fail
// a Bedrock attempt the way a real failure would, chosen by a marker in the
// request's (translated) body so that parallel tests do not interfere.
//
// A marker is FaultStream or FaultLate followed by a token of letters,
// digits and dashes; each token fails one attempt, the first that carries
// it, and later attempts with the same token go through (so that a client's
// retry succeeds).
const (
	// FaultStream makes the processor end the attempt's stream with a gRPC
	// error, as if it had crashed or the stream had broken.
	FaultStream = "ccproxy-fault-upstream-stream-"
	// FaultLate makes the processor miss Envoy's message_timeout: it waits
	// until Envoy ends the stream (or maxLate) before replying, like a call
	// that hangs until its caller gives up.
	FaultLate = "ccproxy-fault-upstream-late-"
)

// maxLate bounds a FaultLate wait when Envoy never ends the stream.
const maxLate = 5 * time.Minute

type faults struct {
	mu   sync.Mutex
	used map[string]bool
}

// inject applies the fault body asks for, once per token: it returns the
// error to end the stream with, or waits, or does nothing.
func (f *faults) inject(ctx context.Context, body []byte) error {
	for _, marker := range []string{FaultStream, FaultLate} {
		token, ok := faultToken(body, marker)
		if !ok || !f.first(marker+token) {
			continue
		}
		if marker == FaultStream {
			return status.Error(codes.Unavailable, "ccproxy fault injection: the upstream processor's stream fails")
		}
		t := time.NewTimer(maxLate)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return nil
}

// first reports whether key is seen for the first time.
func (f *faults) first(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used[key] {
		return false
	}
	if f.used == nil {
		f.used = map[string]bool{}
	}
	f.used[key] = true
	return true
}

// faultToken returns the token after marker in body.
func faultToken(body []byte, marker string) (string, bool) {
	i := bytes.Index(body, []byte(marker))
	if i < 0 {
		return "", false
	}
	rest := body[i+len(marker):]
	n := 0
	for n < len(rest) && (rest[n] == '-' || rest[n] >= '0' && rest[n] <= '9' || rest[n] >= 'a' && rest[n] <= 'z' || rest[n] >= 'A' && rest[n] <= 'Z') {
		n++
	}
	return string(rest[:n]), n > 0
}
