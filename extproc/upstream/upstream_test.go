package upstream

import (
	"context"
	"errors"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
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
		req.Attributes = map[string]*structpb.Struct{AttributesKey: {Fields: fields}}
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
		AttributeBackend: "bedrock",
		AttributeRegion:  "us-east-1",
		AttributeHost:    "bedrock-runtime.us-east-1.amazonaws.com",
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
						RemoveHeaders: []string{handoff.StateHeader, "x-api-key", "anthropic-version", "anthropic-beta"},
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
				RemoveHeaders: []string{handoff.StateHeader, "authorization"},
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
				RemoveHeaders: []string{handoff.StateHeader, "authorization"},
				SetHeaders:    []*corev3.HeaderValueOption{set(":path", passthrough.Path)},
			}}),
			wantSigns: []signCall{{"POST", "bedrock-runtime.us-east-1.amazonaws.com", passthrough.Path, `{"x":1}`, "aws_default_chain"}},
		},
		{
			name:    "plan endpoint only loses the state header",
			stored:  translated,
			attrs:   map[string]string{AttributeBackend: "plan"},
			headers: []string{":method", "POST"},
			want: headersReply(&extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{handoff.StateHeader}}}),
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
			headers: []string{":method", "POST", handoff.StateHeader, "00000000000000000000000000000000"},
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
				headers = append(headers, handoff.StateHeader, store.Put(tc.stored))
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
