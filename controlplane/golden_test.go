package controlplane

import (
	"github.com/ccproxy/ccproxy/internal/xdsvalidate"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"

	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output")

// goldenCases are the configurations whose full rendering is pinned in testdata.
var goldenCases = []struct {
	name string
	opts Options
}{
	{
		// Production on Kubernetes: Anthropic and Bedrock over TLS, extproc sidecar on a Unix
		// socket, two Bedrock regions (given unsorted, with a duplicate) and one model mapping.
		name: "production",
		opts: Options{
			ListenAddress: "0.0.0.0:8080", ExtProcAddress: "unix:///run/ccproxy/extproc.sock",
			BedrockRegions: []string{"us-west-2", "us-east-1", "us-west-2"},
			Bedrock: &runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{{
				AnthropicModelId: "claude-sonnet-4-5-20250929",
				Aliases:          []string{"claude-sonnet-4-5"},
				Family:           "sonnet",
				BedrockModelId:   "anthropic.claude-sonnet-4-5-20250929-v1:0",
				RegionModelIds: map[string]string{
					"":          "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
					"us-east-1": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
				},
			}}},
		},
	},
	{
		// ccproxy dev / tests: plaintext fake Anthropic and fake Bedrock, extproc on loopback TCP.
		name: "dev",
		opts: Options{
			ListenAddress: "127.0.0.1:8080", ExtProcAddress: "127.0.0.1:9002", AnthropicURL: "http://127.0.0.1:18081",
			BedrockURL: "http://127.0.0.1:18082", BedrockRegions: []string{"us-east-1"},
		},
	},
}

// canonicalJSON renders resources as multiline JSON with sorted keys and proto field names.
// protojson alone is deliberately unstable (it randomises whitespace), so its output is
// re-encoded through encoding/json, which sorts map keys.
func canonicalJSON(t *testing.T, r *Resources) []byte {
	t.Helper()
	render := func(ms []proto.Message) []any {
		out := make([]any, 0, len(ms))
		for _, m := range ms {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
			if err != nil {
				t.Fatalf("protojson %T: %v", m, err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("re-decode %T: %v", m, err)
			}
			out = append(out, v)
		}
		return out
	}
	doc := map[string]any{
		"clusters":          render(toMessages(r.Clusters)),
		"listeners":         render(toMessages(r.Listeners)),
		"routes":            render(toMessages(r.Routes)),
		"extension_configs": render(toMessages(r.ExtensionConfigs)),
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func toMessages[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := BuildResources(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := canonicalJSON(t, r)
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the generated configuration; if the change is intended, run go test -run TestGolden -update and review the diff.\ngot:\n%s", path, got)
			}
			// The rendering must be stable across builds, or the golden file is meaningless.
			r2, err := BuildResources(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if again := canonicalJSON(t, r2); !bytes.Equal(got, again) {
				t.Error("two builds of the same options render differently")
			}
		})
	}
}

// TestValidateEverything validates every resource and every typed config nested in an Any,
// at any depth, with the go-control-plane (protoc-gen-validate) rules.
func TestValidateEverything(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := BuildResources(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range r.all() {
				n := validateDeep(t, m.ProtoReflect())
				if n == 0 {
					t.Errorf("%T: nothing validated", m)
				}
			}
		})
	}
}

// validateDeep validates msg and everything below it (xdsvalidate.Deep),
// reporting violations on t, and returns how many messages had rules.
func validateDeep(t *testing.T, msg protoreflect.Message) int {
	t.Helper()
	n, err := xdsvalidate.Deep(msg.Interface())
	if err != nil {
		t.Error(err)
	}
	return n
}

// TestNoDeprecatedFields: no resource the control plane serves uses a deprecated field or
// enum value (xdsvalidate.Deprecated, Envoy's own check): Envoy warns on each and refuses
// those disallowed by default, and a deprecated field is the next release's removal.
func TestNoDeprecatedFields(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := BuildResources(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range r.all() {
				got, err := xdsvalidate.Deprecated(m)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range got {
					t.Errorf("%T uses %s", m, d)
				}
			}
		})
	}
}
