package router

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// The end-to-end behaviour of the processor is tested through the real gRPC
// server in package extproc; this file measures the processor alone.

func newBenchRouter(tb testing.TB, sink usage.Sink) (*Router, string) {
	tb.Helper()
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		tb.Fatal(err)
	}
	key, err := keys.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	store := accesskey.MemoryStore{}
	store.Add(hasher, key, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New()})
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	r, err := New(Config{
		Keys:    accesskey.NewCache(accesskey.NewStoreResolver(store, hasher, nil), hasher, accesskey.CacheConfig{}),
		Usage:   sink,
		Metrics: m,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return r, key
}

// exchange is the sequence of messages Envoy sends for one Plan
// pass-through request.
func passThroughExchange(tb testing.TB, key string, chunks int) []*extprocv3.ProcessingRequest {
	tb.Helper()
	raw, err := os.ReadFile(captures + "anthropic-turn1.request.json")
	if err != nil {
		tb.Fatal(err)
	}
	var c struct {
		Method, Path string
		Headers      map[string]string
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		tb.Fatal(err)
	}
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte(c.Method)},
		{Key: ":path", RawValue: []byte(strings.Replace(c.Path, "ak_test123", key, 1))},
		{Key: ":scheme", RawValue: []byte("https")},
		{Key: ":authority", RawValue: []byte("gateway.example")},
		{Key: "x-request-id", RawValue: []byte("5d3f54a6-4a8e-4f0a-9d43-3f0b4c0a7e21")},
	}}
	var names []string
	for k := range c.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if lk := strings.ToLower(k); lk != "host" && lk != "connection" {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: lk, RawValue: []byte(c.Headers[k])})
		}
	}
	body, err := os.ReadFile(captures + "anthropic-turn1.body.json")
	if err != nil {
		tb.Fatal(err)
	}
	sse, err := os.ReadFile("../metering/testdata/stream-tool-use.sse")
	if err != nil {
		tb.Fatal(err)
	}
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":status", RawValue: []byte("200")},
			{Key: "content-type", RawValue: []byte("text/event-stream; charset=utf-8")},
			{Key: "request-id", RawValue: []byte("req_011CXoM3pC8N8z")},
		}}}}},
	}
	size := (len(sse) + chunks - 1) / chunks
	for off := 0; off < len(sse); off += size {
		end := min(off+size, len(sse))
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: sse[off:end], EndOfStream: end == len(sse)}}})
	}
	return msgs
}

func TestPassThroughExchangeDirect(t *testing.T) {
	rec := &usage.Recorder{}
	r, key := newBenchRouter(t, rec)
	ctx := context.Background()
	p := r.NewProcessor()
	for i, m := range passThroughExchange(t, key, 4) {
		resp, err := p.Process(ctx, m)
		if err != nil || resp == nil {
			t.Fatalf("message %d: %v, %v", i, resp, err)
		}
		if resp.GetImmediateResponse() != nil {
			t.Fatalf("message %d: immediate response %v", i, resp)
		}
	}
	p.Close(ctx)
	evs := rec.Events()
	if len(evs) != 1 || evs[0].Usage.OutputTokens != 143 || evs[0].Aborted {
		t.Fatalf("events = %+v", evs)
	}
}

// BenchmarkProcessorPassThrough is the processor's own cost for one Plan
// pass-through request: the 48 KB Claude Code body and a streamed answer in
// 4 chunks (gRPC decoding and encoding excluded; see extproc-bench for the
// whole server).
func BenchmarkProcessorPassThrough(b *testing.B) {
	r, key := newBenchRouter(b, usage.Discard{})
	msgs := passThroughExchange(b, key, 4)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p := r.NewProcessor()
		for _, m := range msgs {
			if _, err := p.Process(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
		p.Close(ctx)
	}
}

func TestMissingRequestID(t *testing.T) {
	rec := &usage.Recorder{}
	r, key := newBenchRouter(t, rec)
	ctx := context.Background()
	p := r.NewProcessor()
	for i, m := range passThroughExchange(t, key, 1) {
		if i == 0 {
			hs := m.GetRequestHeaders().GetHeaders()
			kept := hs.Headers[:0]
			for _, h := range hs.Headers {
				if h.Key != dataplane.RequestIDHeader {
					kept = append(kept, h)
				}
			}
			hs.Headers = kept
		}
		if _, err := p.Process(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	p.Close(ctx)
	evs := rec.Events()
	if len(evs) != 1 {
		t.Fatalf("events = %+v", evs)
	}
	if _, err := uuid.Parse(evs[0].RequestID); err != nil || evs[0].RequestID != p.RequestID() {
		t.Fatalf("RequestID = %q, want a generated UUID", evs[0].RequestID)
	}
}
