package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/router"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// This file plays Envoy's part in tests: it runs a real Server on a Unix
// socket and talks to it over a real gRPC connection, sending what Envoy's
// ext_proc filter sends (header values in raw_value, pseudo-headers first,
// protocol_config on the first message).

const captures = "../testdata/claude-code-2.1.332/"

// clock is a manually advanced clock shared by the test and the server.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a running server with its dependencies.
type env struct {
	client   extprocv3.ExternalProcessorClient
	conn     *grpc.ClientConn
	rec      *usage.Recorder
	clock    *clock
	reg      *prometheus.Registry
	key      string // active
	revoked  string
	unknown  string
	userID   uuid.UUID
	keyID    uuid.UUID
	sockPath string
}

var envStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var testModels = []router.Model{
	{ID: "claude-opus-5-5", DisplayName: "Claude Opus 5.5", CreatedAt: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)},
	{ID: "claude-sonnet-4-5-20250929", DisplayName: "Claude Sonnet 4.5", CreatedAt: time.Date(2025, 9, 29, 0, 0, 0, 0, time.UTC)},
	{ID: "claude-haiku-4-5-20251001", CreatedAt: time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC)},
}

func newKey(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// failingStore is a KeyStore whose lookups fail, as a database outage does.
type failingStore struct{}

func (failingStore) LookupKeyByHash(context.Context, []byte) (accesskey.KeyRecord, error) {
	return accesskey.KeyRecord{}, errors.New("connection refused")
}

func startEnv(t testing.TB, store accesskey.KeyStore) *env {
	t.Helper()
	return startEnvWith(t, store, nil)
}

// startEnvWith is startEnv with the server's Options adjusted by opt.
func startEnvWith(t testing.TB, store accesskey.KeyStore, opt func(*Options)) *env {
	t.Helper()
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		rec:     &usage.Recorder{},
		clock:   &clock{now: envStart},
		reg:     prometheus.NewRegistry(),
		key:     newKey(t),
		revoked: newKey(t),
		unknown: newKey(t),
		userID:  uuid.New(),
		keyID:   uuid.New(),
	}
	if store == nil {
		mem := accesskey.MemoryStore{}
		mem.Add(hasher, e.key, accesskey.KeyRecord{KeyID: e.keyID, UserID: e.userID, Prefix: keys.DisplayPrefix(e.key)})
		mem.Add(hasher, e.revoked, accesskey.KeyRecord{KeyID: uuid.New(), UserID: e.userID, RevokedAt: envStart.Add(-time.Hour)})
		store = mem
	}
	resolver := accesskey.NewCache(accesskey.NewStoreResolver(store, hasher, e.clock.Now), hasher, accesskey.CacheConfig{Now: e.clock.Now})
	o := Options{
		Keys:       resolver,
		Usage:      e.rec,
		Registerer: e.reg,
		Models:     testModels,
		Now:        e.clock.Now,
	}
	if opt != nil {
		opt(&o)
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "extproc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sockPath = filepath.Join(dir, "s.sock")
	lis, err := Listen("unix://" + e.sockPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.conn, err = grpc.NewClient("unix://"+e.sockPath,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.conn.Close() })
	e.client = extprocv3.NewExternalProcessorClient(e.conn)
	return e
}

// stream is one ext_proc stream as Envoy drives it: send, then wait for
// the reply.
type stream struct {
	t      testing.TB
	s      extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
	first  bool
}

func (e *env) open(t testing.TB) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := e.client.Process(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &stream{t: t, s: s, cancel: cancel, first: true}
}

// send sends req and returns the reply.
func (s *stream) send(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	s.t.Helper()
	if s.first {
		// Envoy puts protocol_config on the first message only.
		req.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: 2 /* BUFFERED */, ResponseBodyMode: 2}
		s.first = false
	}
	if err := s.s.Send(req); err != nil {
		s.t.Fatalf("Send: %v", err)
	}
	resp, err := s.s.Recv()
	if err != nil {
		s.t.Fatalf("Recv: %v", err)
	}
	return resp
}

// close half-closes the stream as Envoy does and waits for the server to
// end it.
func (s *stream) close() {
	s.t.Helper()
	if err := s.s.CloseSend(); err != nil {
		s.t.Fatalf("CloseSend: %v", err)
	}
	if resp, err := s.s.Recv(); err != io.EOF {
		s.t.Fatalf("after CloseSend: Recv = %v, %v; want io.EOF", resp, err)
	}
}

// expectEnd waits for the server to end the stream (after an immediate
// response Envoy sends nothing more).
func (s *stream) expectEnd() {
	s.t.Helper()
	s.close()
}

type header struct{ k, v string }

func headerMap(hs []header) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: h.k, RawValue: []byte(h.v)})
	}
	return m
}

func requestHeaders(hs []header, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(hs), EndOfStream: eos}}}
}

func requestBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

func responseHeaders(hs []header, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(hs), EndOfStream: eos}}}
}

func responseBody(b []byte, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: eos}}}
}

// capture is a recorded Claude Code request (testdata/ at the repository root).
type capture struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

// captureHeaders returns the headers Envoy would send for a capture, with
// the capture's placeholder key ak_test123 replaced by key ("" keeps it):
// pseudo-headers first, names lower-cased, Host as :authority, hop-by-hop
// headers dropped, x-request-id added by the HCM.
func captureHeaders(t testing.TB, name, key, requestID string) []header {
	t.Helper()
	raw, err := os.ReadFile(captures + name + ".request.json")
	if err != nil {
		t.Fatal(err)
	}
	var c capture
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	path := c.Path
	if key != "" {
		path = strings.Replace(path, "ak_test123", key, 1)
	}
	hs := []header{{":method", c.Method}, {":path", path}, {":scheme", "https"}}
	var rest []header
	for k, v := range c.Headers {
		switch lk := strings.ToLower(k); lk {
		case "host":
			hs = append(hs, header{":authority", v})
		case "connection", "keep-alive", "transfer-encoding":
		default:
			rest = append(rest, header{lk, v})
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].k < rest[j].k })
	hs = append(hs, rest...)
	return append(hs, header{"x-request-id", requestID})
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func assertProto(t testing.TB, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("%s:\ngot:  %s\nwant: %s", what, prototext.Format(got), prototext.Format(want))
	}
}
