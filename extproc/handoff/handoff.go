// Package handoff owns the requests the router-level processor hands to the
// upstream-level processor.
//
// Envoy's upstream filter chain carries no request body (the upstream
// ext_proc runs with request_body_mode NONE) and runs once per attempt, so
// everything an attempt needs to rewrite the request for its backend is
// decided once by the router-level processor and kept here, in memory, under
// an id minted from crypto/rand and passed to the upstream filter in the
// dataplane.StateHeader request header (docs/design.md, "Handing the request to the upstream filter"). This
// is why the ext_proc cluster is exactly one local endpoint: both processors
// of a request must be the same process. An entry lives from the router's
// routing decision to the end of the router's stream.
//
// Attempts share Envoy's header map (source/docs/upstream_filters.md), and
// the first attempt's upstream processor removes dataplane.StateHeader so that it never
// reaches an upstream. A retried attempt therefore finds its request by
// Envoy's x-request-id instead (Store.Lookup), which the HCM generates for
// every external request and which stays in the header map; an id shared by
// two requests in flight resolves to neither, so a client that chose another
// request's id can only break its own retry, never borrow another request.
//
// Each Request also records its attempts (Attempts): the upstream processor
// notes which backend each attempt went to, the status it got and whether
// the processor itself failed it, and the router-level processor reads that
// to learn which backend answered and why a fallback happened. An attempt
// the upstream processor failed is also reported at once to the Request's
// Watcher (FailAttempt): depending on the Envoy release such an attempt ends
// in an immediate local reply or stalls until its per-try timeout, and only
// the router-level processor can answer the client in the second case
// (docs/envoy.md, "Upstream filter failures").
package handoff

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"sync"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
)

// Request is what an upstream attempt needs to reach Bedrock. Its fields are
// immutable once stored: attempts share it, and rebuild every mutation from
// it rather than from the (shared, already mutated) Envoy header map. Only
// Attempts changes, through its own lock.
type Request struct {
	// RequestID is Envoy's x-request-id: for logs, and the key under which
	// a retried attempt finds the request (Store.Lookup).
	RequestID string
	// Method is the request method, signed by SigV4.
	Method string
	// Path is the escaped Bedrock request path, e.g.
	// /model/us.anthropic.claude-opus-5-5/invoke-with-response-stream.
	Path string
	// Body is the body Bedrock receives, and the one SigV4 signs.
	Body []byte
	// ReplaceBody reports that Body differs from the client's body and
	// replaces it (CONTINUE_AND_REPLACE); false for a pass-through body.
	ReplaceBody bool
	// RemoveHeaders are client headers that must not reach Bedrock (the
	// client's credentials, anthropic-* headers).
	RemoveHeaders []string
	// SetHeaders are headers to set besides the credential, e.g.
	// content-type and accept.
	SetHeaders []bedrockauth.Header
	// Credential is the Bedrock credential to apply; it was checked (and an
	// API key decrypted into the signer's cache) by the router processor.
	Credential bedrockauth.Credential
	// KeyID is the access key whose Plan circuit breaker the outcome of a
	// Plan attempt feeds; zero when the route has no Plan endpoint.
	KeyID uuid.UUID
	// Probe marks the breaker's half-open probe: only its Plan success
	// needs reporting (a success changes nothing in a closed breaker).
	Probe bool
	// Preempt is the user's pre-emptive failover threshold, a Plan
	// utilization fraction (0 = off): a successful Plan answer announcing a
	// utilization at or above it opens the breaker (planbreaker.Preempt).
	Preempt float64
	// Peer is the identity of the data plane whose router-level stream
	// stored the Request (PeerOf); only its upstream streams find it.
	Peer string
	// Attempts records the request's upstream attempts.
	Attempts Attempts
	// Trace is the request's span in the router-level processor, the
	// parent of each attempt's span; the zero value when not tracing.
	Trace trace.SpanContext
	// Watcher, when set, learns of every attempt FailAttempt records as
	// failed, on the upstream processor's goroutine: the router-level
	// processor of the request.
	Watcher Watcher
}

// Watcher is told of an attempt the upstream processor failed.
type Watcher interface {
	// AttemptFailed is called once per failed attempt, with the attempt as
	// recorded. It must not block for long: the upstream processor's
	// stream waits for it.
	AttemptFailed(a Attempt)
}

// FailAttempt records that the upstream processor failed attempt i with f
// and tells the Watcher. A second failure of the same attempt, or one of an
// attempt never started, is ignored.
func (r *Request) FailAttempt(i int, f Failure) {
	a, ok := r.Attempts.fail(i, f)
	if ok && r.Watcher != nil {
		r.Watcher.AttemptFailed(a)
	}
}

// Failure says how the upstream processor failed an attempt.
type Failure uint8

const (
	// FailureNone: the processor answered the attempt in time.
	FailureNone Failure = iota
	// FailureLate: Envoy stopped waiting for the processor's reply before
	// it was sent — its message_timeout expired, or the attempt was reset
	// meanwhile. Envoy answers 504 (or stalls the attempt).
	FailureLate
	// FailureStream: the processor's stream failed; Envoy answers
	// status_on_error, 500 (or stalls the attempt).
	FailureStream
)

// String returns the failure's name as used in logs and metrics.
func (f Failure) String() string {
	switch f {
	case FailureNone:
		return "none"
	case FailureLate:
		return "late"
	case FailureStream:
		return "stream_failed"
	}
	return "unknown"
}

// Status is the HTTP status Envoy answers the failure with when it does
// not stall: 504 for a late reply, 500 for a failed stream.
func (f Failure) Status() int {
	if f == FailureLate {
		return 504
	}
	return 500
}

// Attempt is one upstream attempt as the upstream processor saw it.
type Attempt struct {
	// Backend is dataplane.BackendPlan or dataplane.BackendBedrock, from the host's metadata.
	Backend string
	// Status is the attempt's response status; 0 while no response headers
	// arrived, and for good when the attempt had none (a connect failure,
	// a reset, a per-try timeout).
	Status int
	// Failure is how the upstream processor failed the attempt;
	// FailureNone when it did not.
	Failure Failure
}

// Attempts is the attempt log of one Request. It is safe for concurrent
// use: upstream processors write it, the router-level processor reads it.
type Attempts struct {
	mu   sync.Mutex
	list []Attempt
}

// Start records a new attempt to backend and returns its index for
// Respond.
func (a *Attempts) Start(backend string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = append(a.list, Attempt{Backend: backend})
	return len(a.list) - 1
}

// Respond records the response status of attempt i.
func (a *Attempts) Respond(i, status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i >= 0 && i < len(a.list) {
		a.list[i].Status = status
	}
}

// fail records f for attempt i unless it already has a failure, and
// returns the attempt.
func (a *Attempts) fail(i int, f Failure) (Attempt, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i < 0 || i >= len(a.list) || a.list[i].Failure != FailureNone || f == FailureNone {
		return Attempt{}, false
	}
	a.list[i].Failure = f
	return a.list[i], true
}

// List returns a copy of the attempts so far, in order.
func (a *Attempts) List() []Attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Attempt(nil), a.list...)
}

// shards spreads the lock: every request takes it twice (store, delete) and
// every attempt once, from many gRPC streams at once.
const shards = 32

// Store holds the Requests of requests in flight. It is safe for concurrent
// use. The zero value is not usable; call NewStore.
type Store struct {
	shards [shards]shard
	// byRequestID indexes the Requests by RequestID, for retried attempts
	// (see the package doc).
	byRequestID [shards]indexShard
	seed        maphash.Seed
}

type shard struct {
	mu sync.Mutex
	m  map[string]*Request
}

type indexShard struct {
	mu sync.Mutex
	m  map[string][]*Request
}

// NewStore returns an empty Store.
func NewStore() *Store {
	s := &Store{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*Request)
		s.byRequestID[i].m = make(map[string][]*Request)
	}
	return s
}

// Put stores r under a new random id and returns the id.
func (s *Store) Put(r *Request) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand documentation, Go 1.24+)
	id := hex.EncodeToString(b[:])
	sh := &s.shards[b[0]%shards]
	sh.mu.Lock()
	sh.m[id] = r
	sh.mu.Unlock()
	if r.RequestID != "" {
		ix := s.indexOf(r.RequestID)
		ix.mu.Lock()
		ix.m[r.RequestID] = append(ix.m[r.RequestID], r)
		ix.mu.Unlock()
	}
	return id
}

// Lookup finds the Request of an upstream attempt: by stateID, the
// dataplane.StateHeader value, when the attempt still carries it; otherwise by
// requestID, Envoy's x-request-id, when exactly one Request in flight has
// it. It returns nil when neither identifies one, and ErrOtherPeer with the
// Request's absence when one does but was stored by another peer.
func (s *Store) Lookup(stateID, requestID, peer string) (*Request, error) {
	r := s.lookup(stateID, requestID)
	if r != nil && r.Peer != peer {
		return nil, ErrOtherPeer
	}
	return r, nil
}

// ErrOtherPeer is Lookup's error for a Request stored by another peer.
var ErrOtherPeer = errors.New("handoff: request stored by another peer")

func (s *Store) lookup(stateID, requestID string) *Request {
	if stateID != "" {
		return s.Get(stateID)
	}
	if requestID == "" {
		return nil
	}
	ix := s.indexOf(requestID)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if rs := ix.m[requestID]; len(rs) == 1 {
		return rs[0]
	}
	return nil
}

func (s *Store) indexOf(requestID string) *indexShard {
	return &s.byRequestID[maphash.String(s.seed, requestID)%shards]
}

// Get returns the Request stored under id, or nil.
func (s *Store) Get(id string) *Request {
	sh := s.shardOf(id)
	if sh == nil {
		return nil
	}
	sh.mu.Lock()
	r := sh.m[id]
	sh.mu.Unlock()
	return r
}

// Delete forgets id.
func (s *Store) Delete(id string) {
	sh := s.shardOf(id)
	if sh == nil {
		return
	}
	sh.mu.Lock()
	r := sh.m[id]
	delete(sh.m, id)
	sh.mu.Unlock()
	if r == nil || r.RequestID == "" {
		return
	}
	ix := s.indexOf(r.RequestID)
	ix.mu.Lock()
	rs := ix.m[r.RequestID]
	for i, x := range rs {
		if x == r {
			rs = append(rs[:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(ix.m, r.RequestID)
	} else {
		ix.m[r.RequestID] = rs
	}
	ix.mu.Unlock()
}

// Len returns the number of stored Requests.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}

func (s *Store) shardOf(id string) *shard {
	if len(id) != 32 {
		return nil
	}
	var b [1]byte
	if _, err := hex.Decode(b[:], []byte(id[:2])); err != nil {
		return nil
	}
	return &s.shards[b[0]%shards]
}
