package extproc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/usage"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// bedrockEnv is a real server with Bedrock enabled: a bedrock_only user
// whose API key is sealed with a local master key, exactly as the admin
// service stores it.
type bedrockEnv struct {
	client extprocv3.ExternalProcessorClient
	key    string
	rec    *usage.Recorder
}

const bedrockAPIKey = "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl"

func startBedrockEnv(t *testing.T) *bedrockEnv {
	t.Helper()
	ctx := context.Background()
	sealer, err := secrets.NewLocal(bytes.Repeat([]byte{7}, secrets.MasterKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	userID := uuid.New()
	sealed, err := sealer.Seal(ctx, []byte(bedrockAPIKey), bedrockauth.CredentialAAD(userID))
	if err != nil {
		t.Fatal(err)
	}
	hasher, err := keys.NewHasher([]byte(strings.Repeat("x", keys.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	e := &bedrockEnv{key: newKey(t), rec: &usage.Recorder{}}
	mem := accesskey.MemoryStore{}
	mem.Add(hasher, e.key, accesskey.KeyRecord{KeyID: uuid.New(), UserID: userID, RoutingStrategy: accesskey.RoutingBedrockOnly,
		Credential: &accesskey.BedrockCredential{ID: uuid.New(), Kind: bedrockauth.KindAPIKey, Region: "eu-west-1", SecretCiphertext: sealed}})
	rt, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{{AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5",
			RegionModelIds: map[string]string{"": "global.anthropic.claude-opus-5-5"}}},
		Regions: []string{"eu-west-1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Options{
		Keys:       accesskey.NewStoreResolver(mem, hasher, nil),
		Usage:      e.rec,
		Registerer: prometheus.NewRegistry(),
		Bedrock:    &BedrockOptions{Runtime: runtimeconfig.StaticSource{Config: rt}, Signer: bedrockauth.New(bedrockauth.Config{Sealer: sealer})},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lis, err := Listen("unix://" + filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "s.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.client = extprocv3.NewExternalProcessorClient(conn)
	return e
}

func (e *bedrockEnv) open(t *testing.T, md ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	s, err := e.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &stream{t: t, s: s, cancel: cancel, first: true}
}

func upstreamHeaders(state string, withAttrs bool) *extprocv3.ProcessingRequest {
	req := requestHeaders([]header{{":method", "POST"}, {":path", "/v1/messages"}, {"x-api-key", "sk-client"}, {dataplane.StateHeader, state}}, false)
	if withAttrs {
		req.Attributes = map[string]*structpb.Struct{dataplane.AttributesKey: {Fields: map[string]*structpb.Value{
			dataplane.AttributeBackend: structpb.NewStringValue("bedrock"),
			dataplane.AttributeRegion:  structpb.NewStringValue("eu-west-1"),
			dataplane.AttributeHost:    structpb.NewStringValue("bedrock-runtime.eu-west-1.amazonaws.com"),
		}}}
	}
	return req
}

// TestBedrockAcrossBothFilters runs one request through the router-level
// stream and two upstream attempts (identified once by gRPC metadata, once
// by their attributes), as Envoy does around a retry: both attempts get the
// same rewrite, with the decrypted API key.
func TestBedrockAcrossBothFilters(t *testing.T) {
	e := startBedrockEnv(t)
	body, err := os.ReadFile("../testdata/claude-code-2.1.332/anthropic-turn1.body.json")
	if err != nil {
		t.Fatal(err)
	}
	rs := e.open(t)
	rs.send(requestHeaders([]header{{":method", "POST"}, {":path", "/ak/" + e.key + "/v1/messages?beta=true"}, {"x-api-key", "sk-client"},
		{"anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"}}, false))
	reply := rs.send(requestBody(body, true)).GetRequestBody().GetResponse()
	var route, state string
	for _, h := range reply.GetHeaderMutation().GetSetHeaders() {
		switch h.GetHeader().GetKey() {
		case dataplane.RouteHeader:
			route = string(h.GetHeader().GetRawValue())
		case dataplane.StateHeader:
			state = string(h.GetHeader().GetRawValue())
		}
	}
	if route != "bedrock-eu-west-1" || state == "" {
		t.Fatalf("route %q state %q", route, state)
	}
	for i, md := range [][]string{{dataplane.FilterHeader, dataplane.FilterUpstream}, nil} {
		us := e.open(t, md...)
		r := us.send(upstreamHeaders(state, true)).GetRequestHeaders().GetResponse()
		got := map[string]string{}
		for _, h := range r.GetHeaderMutation().GetSetHeaders() {
			got[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
		}
		if got["authorization"] != "Bearer "+bedrockAPIKey || got[":path"] != "/model/global.anthropic.claude-opus-5-5/invoke-with-response-stream" ||
			r.GetStatus() != extprocv3.CommonResponse_CONTINUE_AND_REPLACE || !bytes.Contains(r.GetBodyMutation().GetBody(), []byte(`"anthropic_beta":["interleaved-thinking-2025-05-14"]`)) {
			t.Fatalf("attempt %d: %v", i+1, r)
		}
		if rh := us.send(responseHeaders([]header{{":status", "200"}}, false)).GetResponseHeaders(); rh == nil {
			t.Fatalf("attempt %d: no response headers reply", i+1)
		}
		us.close()
	}
	rs.close()
}
