// Package handoff owns the requests the router-level processor hands to the
// upstream-level processor.
//
// Envoy's upstream filter chain carries no request body (the upstream
// ext_proc runs with request_body_mode NONE) and runs once per attempt, so
// everything an attempt needs to rewrite the request for its backend is
// decided once by the router-level processor and kept here, in memory, under
// an id minted from crypto/rand and passed to the upstream filter in the
// StateHeader request header (DESIGN.md "Request lifecycle on Envoy"). This
// is why the ext_proc cluster is exactly one local endpoint: both processors
// of a request must be the same process. An entry lives from the router's
// routing decision to the end of the router's stream.
package handoff

import (
	"crypto/rand"
	"encoding/hex"
	"sync"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
)

// StateHeader carries the handoff id from the router-level filter to the
// upstream filter. The router removes any client-sent copy before setting
// it; the upstream processor removes it before the request leaves Envoy.
const StateHeader = "x-ccproxy-state"

// Backends, as the control plane writes them into the endpoints' host
// metadata (filter_metadata["ccproxy"]["backend"]).
const (
	BackendPlan    = "plan"
	BackendBedrock = "bedrock"
)

// Request is what an upstream attempt needs to reach Bedrock. It is
// immutable once stored: attempts share it, and rebuild every mutation from
// it rather than from the (shared, already mutated) Envoy header map.
type Request struct {
	// RequestID is Envoy's x-request-id, for logs.
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
}

// shards spreads the lock: every request takes it twice (store, delete) and
// every attempt once, from many gRPC streams at once.
const shards = 32

// Store holds the Requests of requests in flight. It is safe for concurrent
// use. The zero value is not usable; call NewStore.
type Store struct {
	shards [shards]shard
}

type shard struct {
	mu sync.Mutex
	m  map[string]*Request
}

// NewStore returns an empty Store.
func NewStore() *Store {
	s := &Store{}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*Request)
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
	return id
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
	delete(sh.m, id)
	sh.mu.Unlock()
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
