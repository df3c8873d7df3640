package upstream

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// recordingSigner returns fixed headers and records what it signed.
type recordingSigner struct {
	err   error
	calls []signCall
}

type signCall struct {
	method, host, path, body string
	kind                     string
}

func (s *recordingSigner) Sign(_ context.Context, cred bedrockauth.Credential, method, host, path string, body []byte) ([]bedrockauth.Header, error) {
	s.calls = append(s.calls, signCall{method, host, path, string(body), cred.Kind})
	if s.err != nil {
		return nil, s.err
	}
	return []bedrockauth.Header{{Name: "authorization", Value: "Bearer k-1"}}, nil
}

func headersMsg(attrs map[string]string, headers ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: headers[i], RawValue: []byte(headers[i+1])})
	}
	req := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
	if attrs != nil {
		fields := map[string]*structpb.Value{}
		for k, v := range attrs {
			fields[k] = structpb.NewStringValue(v)
		}
		req.Attributes = map[string]*structpb.Struct{dataplane.AttributesKey: {Fields: fields}}
	}
	return req
}

func set(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		//lint:ignore SA1019 ext_proc reads append, not its replacement append_action.
		Append: wrapperspb.Bool(false),
	}
}

func headersReply(c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: c}}}
}

func TestRequestHeaders(t *testing.T) {
	bedrockAttrs := map[string]string{
		dataplane.AttributeBackend: "bedrock",
		dataplane.AttributeRegion:  "us-east-1",
		dataplane.AttributeHost:    "bedrock-runtime.us-east-1.amazonaws.com",
	}
	translated := &handoff.Request{
		RequestID:     "rid-1",
		Method:        "POST",
		Path:          "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream",
		Body:          []byte(`{"messages":[],"anthropic_version":"bedrock-2023-05-31"}`),
		ReplaceBody:   true,
		RemoveHeaders: []string{"x-api-key", "anthropic-version", "anthropic-beta"},
		SetHeaders:    []bedrockauth.Header{{Name: "content-type", Value: "application/json"}, {Name: "accept", Value: "application/vnd.amazon.eventstream"}},
		Credential:    bedrockauth.Credential{Kind: bedrockauth.KindAPIKey, Region: "us-east-1"},
	}
	passthrough := &handoff.Request{
		Method:        "POST",
		Path:          "/model/us.anthropic.claude-opus-5-5/invoke",
		Body:          []byte(`{"x":1}`),
		RemoveHeaders: []string{"authorization"},
		Credential:    bedrockauth.Credential{Kind: bedrockauth.KindAWSDefaultChain, Region: "us-east-1"},
	}
	unchanged := headersReply(nil)

	tests := []struct {
		name      string
		stored    *handoff.Request
		signErr   error
		attrs     map[string]string
		headers   []string
		want      *extprocv3.ProcessingResponse
		wantSigns []signCall
	}{
		{
			name:    "translated request replaces path, headers and body",
			stored:  translated,
			attrs:   bedrockAttrs,
			headers: []string{":method", "POST", ":path", "/v1/messages?beta=true", "x-api-key", "sk-client"},
			want: func() *extprocv3.ProcessingResponse {
				r := headersReply(&extprocv3.CommonResponse{
					Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
					HeaderMutation: &extprocv3.HeaderMutation{
						RemoveHeaders: []string{dataplane.StateHeader, "x-api-key", "anthropic-version", "anthropic-beta"},
						SetHeaders: []*corev3.HeaderValueOption{
							set(":path", "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream"),
							set("content-type", "application/json"),
							set("accept", "application/vnd.amazon.eventstream"),
							set("authorization", "Bearer k-1"),
						},
					},
					BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: translated.Body}},
				})
				r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
					"ccproxy": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
						"content_length": structpb.NewStringValue("56"),
					}}),
				}}
				return r
			}(),
			wantSigns: []signCall{{"POST", "bedrock-runtime.us-east-1.amazonaws.com", translated.Path, string(translated.Body), "api_key"}},
		},
		{
			name:    "pass-through keeps the body and signs the original",
			stored:  passthrough,
			attrs:   bedrockAttrs,
			headers: []string{":method", "POST"},
			want: headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{dataplane.StateHeader, "authorization"},
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", passthrough.Path), set("authorization", "Bearer k-1")},
			}}),
			wantSigns: []signCall{{"POST", "bedrock-runtime.us-east-1.amazonaws.com", passthrough.Path, `{"x":1}`, "aws_default_chain"}},
		},
		{
			name:    "sign failure continues unsigned",
			stored:  passthrough,
			signErr: errors.New("no AWS credentials"),
			attrs:   bedrockAttrs,
			headers: []string{":method", "POST"},
			want: headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{dataplane.StateHeader, "authorization"},
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", passthrough.Path)},
			}}),
			wantSigns: []signCall{{"POST", "bedrock-runtime.us-east-1.amazonaws.com", passthrough.Path, `{"x":1}`, "aws_default_chain"}},
		},
		{
			name:    "plan endpoint only loses the state header",
			stored:  translated,
			attrs:   map[string]string{dataplane.AttributeBackend: "plan"},
			headers: []string{":method", "POST"},
			want: headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{dataplane.StateHeader}}}),
		},
		{
			name:    "no attributes: unchanged",
			stored:  translated,
			headers: []string{":method", "POST"},
			want:    unchanged,
		},
		{
			name:    "unknown state id: unchanged",
			attrs:   bedrockAttrs,
			headers: []string{":method", "POST", dataplane.StateHeader, "00000000000000000000000000000000"},
			want:    unchanged,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := handoff.NewStore()
			signer := &recordingSigner{err: tc.signErr}
			h, err := New(Config{Requests: store, Signer: signer, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			headers := tc.headers
			if tc.stored != nil {
				headers = append(headers, dataplane.StateHeader, store.Put(tc.stored))
			}
			// Two attempts: each rebuilds the same mutations from the
			// stored request.
			for attempt := 1; attempt <= 2; attempt++ {
				got := h.NewProcessor().Process(context.Background(), headersMsg(tc.attrs, headers...))
				if !proto.Equal(tc.want, got) {
					t.Fatalf("attempt %d reply:\n got %s\nwant %s", attempt, prototext.Format(got), prototext.Format(tc.want))
				}
			}
			want := append(append([]signCall(nil), tc.wantSigns...), tc.wantSigns...)
			if !slices.Equal(want, signer.calls) {
				t.Fatalf("sign calls:\n got %+v\nwant %+v", signer.calls, want)
			}
		})
	}
}

func TestOtherPhasesPassUnchanged(t *testing.T) {
	h, err := New(Config{Requests: handoff.NewStore(), Signer: &recordingSigner{}})
	if err != nil {
		t.Fatal(err)
	}
	p := h.NewProcessor()
	resp := p.Process(context.Background(), &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{}}})
	want := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	if !proto.Equal(want, resp) {
		t.Fatalf("got %s, want %s", prototext.Format(resp), prototext.Format(want))
	}
	if got := p.Process(context.Background(), &extprocv3.ProcessingRequest{ObservabilityMode: true,
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}}); got != nil {
		t.Fatalf("observability mode reply = %v, want nil", got)
	}
}

// reportingBreaker records Report and Preempt calls.
type reportingBreaker struct {
	calls    []breakerCall
	preempts []preemptCall
}

type preemptCall struct {
	key   uuid.UUID
	until time.Time
}

func (b *reportingBreaker) Preempt(_ context.Context, keyID uuid.UUID, until time.Time) {
	b.preempts = append(b.preempts, preemptCall{keyID, until})
}

type breakerCall struct {
	key        uuid.UUID
	status     int
	retryAfter string
}

func (b *reportingBreaker) Report(_ context.Context, keyID uuid.UUID, status int, get func(string) string) planbreaker.Outcome {
	b.calls = append(b.calls, breakerCall{keyID, status, get("retry-after")})
	return planbreaker.Classify(status, get)
}

func responseMsg(headers ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i < len(headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: headers[i], RawValue: []byte(headers[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

// TestFallbackAttempts plays Envoy's two attempts of a plan+bedrock route:
// Plan first (unchanged but for the handoff header, which it removes from
// the shared header map), then Bedrock, which finds the request by
// x-request-id. Both are recorded; only Plan's outcome reaches the breaker.
func TestFallbackAttempts(t *testing.T) {
	store := handoff.NewStore()
	keyID := uuid.New()
	r := &handoff.Request{
		RequestID: "rid-fallback", Method: "POST", KeyID: keyID,
		Path: "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream", Body: []byte(`{"messages":[]}`), ReplaceBody: true,
		RemoveHeaders: []string{"x-api-key"},
		Credential:    bedrockauth.Credential{Kind: "api_key", Region: "us-east-1"},
	}
	id := store.Put(r)
	signer := &recordingSigner{}
	brk := &reportingBreaker{}
	h, err := New(Config{Requests: store, Signer: signer, Breaker: brk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Attempt 1: Plan.
	plan := h.NewProcessor()
	resp := plan.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: "plan"},
		":method", "POST", ":path", "/v1/messages", "x-request-id", "rid-fallback", dataplane.StateHeader, id, "x-api-key", "sk-client"))
	want := headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{dataplane.StateHeader}}})
	if !proto.Equal(resp, want) {
		t.Fatalf("plan attempt reply:\n got %v\nwant %v", prototext.Format(resp), prototext.Format(want))
	}
	if got := plan.Process(ctx, responseMsg(":status", "429", "retry-after", "120")); !proto.Equal(got, Unchanged(responseMsg())) {
		t.Fatalf("plan response headers reply %v", got)
	}

	// Attempt 2: Bedrock, on the shared header map that lost the handoff header.
	bed := h.NewProcessor()
	resp = bed.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: "bedrock", dataplane.AttributeHost: "bedrock-runtime.us-east-1.amazonaws.com"},
		":method", "POST", ":path", "/v1/messages", "x-request-id", "rid-fallback", "x-api-key", "sk-client"))
	hm := resp.GetRequestHeaders().GetResponse().GetHeaderMutation()
	if resp.GetRequestHeaders().GetResponse().GetStatus() != extprocv3.CommonResponse_CONTINUE_AND_REPLACE || len(hm.GetSetHeaders()) == 0 ||
		hm.GetSetHeaders()[0].GetHeader().GetKey() != ":path" || string(hm.GetSetHeaders()[0].GetHeader().GetRawValue()) != r.Path {
		t.Fatalf("bedrock attempt not rewritten: %v", prototext.Format(resp))
	}
	if len(signer.calls) != 1 || signer.calls[0].host != "bedrock-runtime.us-east-1.amazonaws.com" {
		t.Fatalf("sign calls %+v", signer.calls)
	}
	bed.Process(ctx, responseMsg(":status", "200", "content-type", "application/vnd.amazon.eventstream"))

	wantAttempts := []handoff.Attempt{{Backend: "plan", Status: 429}, {Backend: "bedrock", Status: 200}}
	if got := r.Attempts.List(); !slices.Equal(got, wantAttempts) {
		t.Fatalf("attempts %+v, want %+v", got, wantAttempts)
	}
	if want := []breakerCall{{keyID, 429, "120"}}; !slices.Equal(brk.calls, want) {
		t.Fatalf("breaker reports %+v, want %+v (Plan's only)", brk.calls, want)
	}

	t.Run("a plan success is reported only for the probe", func(t *testing.T) {
		for _, probe := range []bool{false, true} {
			before := len(brk.calls)
			rq := &handoff.Request{RequestID: "rid-ok", KeyID: keyID, Probe: probe}
			idOK := store.Put(rq)
			p := h.NewProcessor()
			p.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: "plan"}, dataplane.StateHeader, idOK))
			p.Process(ctx, responseMsg(":status", "200"))
			store.Delete(idOK)
			if got, want := len(brk.calls)-before, map[bool]int{false: 0, true: 1}[probe]; got != want {
				t.Fatalf("probe=%v: %d breaker reports, want %d", probe, got, want)
			}
		}
		brk.calls = brk.calls[:1]
	})
	t.Run("pre-emptive failover: a success at or above the threshold preempts", func(t *testing.T) {
		reset := time.Unix(1772384400, 0).UTC()
		tests := []struct {
			name      string
			threshold float64
			probe     bool
			status    string
			util      string
			preempts  int
			reports   int
		}{
			{"off", 0, false, "200", "0.99", 0, 0},
			{"below", 0.95, false, "200", "0.94", 0, 0},
			{"at", 0.95, false, "200", "0.95", 1, 0},
			{"probe above", 0.95, true, "200", "0.97", 1, 0},
			{"probe below closes", 0.95, true, "200", "0.10", 0, 1},
			{"a 429 stays a rate limit", 0.95, false, "429", "1", 0, 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				brk.calls, brk.preempts = nil, nil
				rq := &handoff.Request{RequestID: "rid-pre", KeyID: keyID, Probe: tt.probe, Preempt: tt.threshold}
				idp := store.Put(rq)
				defer store.Delete(idp)
				p := h.NewProcessor()
				p.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: "plan"}, dataplane.StateHeader, idp))
				got := p.Process(ctx, responseMsg(":status", tt.status, "anthropic-ratelimit-unified-5h-utilization", tt.util,
					"anthropic-ratelimit-unified-5h-reset", "1772384400"))
				if !proto.Equal(got, Unchanged(responseMsg())) {
					t.Fatalf("response headers changed: %v", got)
				}
				if len(brk.preempts) != tt.preempts || len(brk.calls) != tt.reports {
					t.Fatalf("%d preempts, %d reports; want %d, %d", len(brk.preempts), len(brk.calls), tt.preempts, tt.reports)
				}
				if tt.preempts == 1 && (brk.preempts[0].key != keyID || !brk.preempts[0].until.Equal(reset)) {
					t.Fatalf("preempt %+v, want key %s until %s", brk.preempts[0], keyID, reset)
				}
			})
		}
		brk.calls, brk.preempts = []breakerCall{{keyID, 429, "120"}}, nil
	})
	t.Run("no breaker key: plan outcome not reported", func(t *testing.T) {
		r2 := &handoff.Request{RequestID: "rid-2"}
		id2 := store.Put(r2)
		p := h.NewProcessor()
		p.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: "plan"}, dataplane.StateHeader, id2))
		p.Process(ctx, responseMsg(":status", "503"))
		if len(brk.calls) != 1 {
			t.Fatalf("breaker reports %+v", brk.calls)
		}
		if got := r2.Attempts.List(); len(got) != 1 || got[0].Status != 503 {
			t.Fatalf("attempts %+v", got)
		}
	})
}

// blockingSigner blocks until its context ends, as an AWS credential chain
// whose metadata service does not answer would.
type blockingSigner struct{ deadline bool }

func (s *blockingSigner) Sign(ctx context.Context, _ bedrockauth.Credential, _, _, _ string, _ []byte) ([]bedrockauth.Header, error) {
	_, s.deadline = ctx.Deadline()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		// Without a deadline the test fails on s.deadline; this only keeps
		// it from hanging.
		return nil, errors.New("credential chain never answered")
	}
}

// TestSignIsBounded: a credential that cannot be applied in time must not
// hold the attempt until Envoy's message timeout, whose local reply is never
// retried; the attempt continues unsigned, counted, and Bedrock's refusal
// reaches the router-level processor.
func TestSignIsBounded(t *testing.T) {
	store := handoff.NewStore()
	signer := &blockingSigner{}
	reg := prometheus.NewRegistry()
	h, err := New(Config{Requests: store, Signer: signer, Registerer: reg, SignTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	id := store.Put(&handoff.Request{RequestID: "rid", Method: "POST", Path: "/model/m/invoke", Body: []byte(`{}`),
		Credential: bedrockauth.Credential{Kind: bedrockauth.KindAWSDefaultChain, Region: "us-east-1"}})
	got := h.NewProcessor().Process(context.Background(), headersMsg(
		map[string]string{dataplane.AttributeBackend: dataplane.BackendBedrock, dataplane.AttributeHost: "bedrock-runtime.us-east-1.amazonaws.com"},
		":method", "POST", dataplane.StateHeader, id))
	want := headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
		RemoveHeaders: []string{dataplane.StateHeader},
		SetHeaders:    []*corev3.HeaderValueOption{set(":path", "/model/m/invoke")},
	}})
	if !proto.Equal(want, got) {
		t.Fatalf("reply:\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
	if !signer.deadline {
		t.Fatal("Sign was called without a deadline")
	}
	if n := testutil.ToFloat64(h.failures.WithLabelValues("sign")); n != 1 {
		t.Fatalf("sign failures = %v", n)
	}
}

func TestDefaultSignTimeout(t *testing.T) {
	h, err := New(Config{Requests: handoff.NewStore(), Signer: &recordingSigner{}})
	if err != nil {
		t.Fatal(err)
	}
	if h.signWait != DefaultSignTimeout {
		t.Fatalf("sign timeout %v, want %v", h.signWait, DefaultSignTimeout)
	}
}

// TestBedrockHeaderAllowList: a Bedrock attempt leaves with the company's
// credential, so only the headers the gateway vouches for stay; whatever
// else the client sent — a forged security token, a service tier, a
// guardrail, a trace flag — is removed, and the credential is set after the
// removals.
func TestBedrockHeaderAllowList(t *testing.T) {
	store := handoff.NewStore()
	h, err := New(Config{Requests: store, Signer: &recordingSigner{}})
	if err != nil {
		t.Fatal(err)
	}
	id := store.Put(&handoff.Request{RequestID: "rid", Method: "POST", Path: "/model/m/invoke", Body: []byte(`{}`),
		RemoveHeaders: []string{"x-api-key"},
		Credential:    bedrockauth.Credential{Kind: bedrockauth.KindAPIKey, Region: "us-east-1"}})
	got := h.NewProcessor().Process(context.Background(), headersMsg(
		map[string]string{dataplane.AttributeBackend: dataplane.BackendBedrock, dataplane.AttributeHost: "bedrock-runtime.us-east-1.amazonaws.com"},
		":method", "POST", ":path", "/bedrock/model/m/invoke", ":authority", "gw.example.com", ":scheme", "https",
		dataplane.StateHeader, id,
		"host", "gw.example.com",
		"content-type", "application/json",
		"content-length", "2",
		"accept", "application/json",
		"user-agent", "aws-sdk-js/3",
		"x-request-id", "rid",
		"x-forwarded-for", "10.0.0.1",
		"x-forwarded-proto", "https",
		"x-envoy-expected-rq-timeout-ms", "600000",
		"x-api-key", "sk-client",
		"x-amz-security-token", "forged",
		"x-amz-date", "20260101T000000Z",
		"X-Amzn-Bedrock-Service-Tier", "priority", // Envoy lower-cases names; a raw one is removed all the same
		"x-amzn-bedrock-service-tier", "priority",
		"x-amzn-bedrock-guardrailidentifier", "gr-1",
		"x-amzn-bedrock-trace", "ENABLED",
		"amz-sdk-invocation-id", "1",
		"traceparent", "00-1-2-01",
		dataplane.RouteHeader, "bedrock-us-east-1",
		"x-amzn-bedrock-service-tier", "priority", // repeated: removed once
	))
	want := headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
		RemoveHeaders: []string{dataplane.StateHeader, "x-api-key", "x-amz-security-token", "x-amz-date",
			"X-Amzn-Bedrock-Service-Tier", "x-amzn-bedrock-service-tier", "x-amzn-bedrock-guardrailidentifier", "x-amzn-bedrock-trace",
			"amz-sdk-invocation-id", "traceparent", dataplane.RouteHeader},
		SetHeaders: []*corev3.HeaderValueOption{set(":path", "/model/m/invoke"), set("authorization", "Bearer k-1")},
	}})
	if !proto.Equal(want, got) {
		t.Fatalf("reply:\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

// TestOtherPeerGetsNothing: an upstream stream from another process than
// the data plane that routed the request (anyone who can reach the ext_proc
// socket) must not get the request rewritten with the credential.
func TestOtherPeerGetsNothing(t *testing.T) {
	store := handoff.NewStore()
	signer := &recordingSigner{}
	h, err := New(Config{Requests: store, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	id := store.Put(&handoff.Request{RequestID: "rid", Method: "POST", Path: "/model/m/invoke", Body: []byte(`{}`), Peer: "unix:pid=10",
		Credential: bedrockauth.Credential{Kind: bedrockauth.KindAPIKey, Region: "us-east-1"}})
	attrs := map[string]string{dataplane.AttributeBackend: dataplane.BackendBedrock, dataplane.AttributeHost: "bedrock-runtime.us-east-1.amazonaws.com"}
	for _, tc := range []struct{ name, stateID, requestID string }{{"by state id", id, ""}, {"by request id", "", "rid"}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := handoff.WithPeer(context.Background(), "unix:pid=11")
			msg := headersMsg(attrs, ":method", "POST", "x-request-id", tc.requestID)
			if tc.stateID != "" {
				msg = headersMsg(attrs, ":method", "POST", dataplane.StateHeader, tc.stateID)
			}
			got := h.NewProcessor().Process(ctx, msg)
			if !proto.Equal(got, headersReply(nil)) {
				t.Fatalf("reply to another peer: %s", prototext.Format(got))
			}
		})
	}
	if len(signer.calls) != 0 {
		t.Fatalf("credential applied for another peer: %+v", signer.calls)
	}
	if n := testutil.ToFloat64(h.failures.WithLabelValues("other_peer")); n != 2 {
		t.Fatalf("other_peer failures = %v", n)
	}
	// The data plane that stored it still finds it.
	got := h.NewProcessor().Process(handoff.WithPeer(context.Background(), "unix:pid=10"), headersMsg(attrs, ":method", "POST", dataplane.StateHeader, id))
	if len(signer.calls) != 1 || got.GetRequestHeaders().GetResponse().GetHeaderMutation() == nil {
		t.Fatalf("the storing peer was refused: %s", prototext.Format(got))
	}
}

// failureWatcher records the failures the processor reports.
type failureWatcher struct{ failed []handoff.Attempt }

func (w *failureWatcher) AttemptFailed(a handoff.Attempt) { w.failed = append(w.failed, a) }

// TestAbandoned: a reply that could not reach Envoy — the stream ended
// before it was sent — marks the attempt failed (late) in the handoff
// state and tells the request's watcher (the router-level processor) at
// once, for Plan and Bedrock attempts alike; an attempt without routing
// state is only counted.
func TestAbandoned(t *testing.T) {
	for _, backend := range []string{dataplane.BackendPlan, dataplane.BackendBedrock} {
		t.Run(backend, func(t *testing.T) {
			store := handoff.NewStore()
			reg := prometheus.NewRegistry()
			h, err := New(Config{Requests: store, Signer: &recordingSigner{}, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			w := &failureWatcher{}
			r := &handoff.Request{RequestID: "rid", Method: "POST", Path: "/model/m/invoke", Body: []byte(`{}`), Watcher: w,
				Credential: bedrockauth.Credential{Kind: bedrockauth.KindAPIKey, Region: "us-east-1"}}
			r.Attempts.Start(dataplane.BackendPlan) // an earlier attempt, answered
			r.Attempts.Respond(0, 429)
			id := store.Put(r)
			ctx, cancel := context.WithCancel(context.Background())
			p := h.NewProcessor()
			if resp := p.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: backend, dataplane.AttributeHost: "h"},
				":method", "POST", dataplane.StateHeader, id)); resp == nil || p.Err() != nil {
				t.Fatalf("reply %v, err %v", resp, p.Err())
			}
			cancel() // Envoy's message timeout closed the stream before the reply went out
			p.Abandoned(ctx, ctx.Err())
			p.Abandoned(ctx, ctx.Err()) // reported once
			want := []handoff.Attempt{{Backend: dataplane.BackendPlan, Status: 429}, {Backend: backend, Failure: handoff.FailureLate}}
			if got := r.Attempts.List(); !slices.Equal(got, want) {
				t.Fatalf("attempts %+v, want %+v", got, want)
			}
			if !slices.Equal(w.failed, want[1:]) {
				t.Fatalf("watcher told %+v, want %+v", w.failed, want[1:])
			}
			if n := testutil.ToFloat64(h.abandoned.WithLabelValues("late")); n != 2 {
				t.Fatalf("abandoned{late} = %v, want 2 (each reply that did not go out)", n)
			}

			// No routing state: nothing to tell, still counted.
			lost := h.NewProcessor()
			lost.Process(ctx, headersMsg(map[string]string{dataplane.AttributeBackend: backend}, ":method", "POST"))
			lost.Abandoned(ctx, errors.New("send: stream closed"))
			if n := testutil.ToFloat64(h.abandoned.WithLabelValues("late")); n != 3 {
				t.Fatalf("abandoned{late} = %v, want 3", n)
			}
		})
	}
}
