package bedrock

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/extproc/internal/jsonscan"
	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
)

const captureDir = "../../../testdata/claude-code-2.1.332"

func readCapture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(captureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func captureBeta(t testing.TB, name string) string {
	t.Helper()
	var req struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(readCapture(t, name), &req); err != nil {
		t.Fatal(err)
	}
	return req.Headers["anthropic-beta"]
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("output is not valid JSON: %v", err)
	}
	return v
}

// topKeys returns the top-level member names of a JSON object in order.
func topKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// lookup walks a decoded JSON value along a path like "system", 2, "text".
func lookup(v any, path ...any) (parent any, last any) {
	for i, p := range path {
		if i == len(path)-1 {
			return v, p
		}
		switch p := p.(type) {
		case string:
			v = v.(map[string]any)[p]
		case int:
			v = v.([]any)[p]
		}
	}
	return nil, nil
}

func set(v any, val any, path ...any) {
	parent, last := lookup(v, path...)
	switch l := last.(type) {
	case string:
		parent.(map[string]any)[l] = val
	case int:
		parent.([]any)[l] = val
	}
}

func get(v any, path ...any) any {
	parent, last := lookup(v, path...)
	switch l := last.(type) {
	case string:
		return parent.(map[string]any)[l]
	case int:
		return parent.([]any)[l]
	}
	return nil
}

func TestTranslateGolden(t *testing.T) {
	body := readCapture(t, "anthropic-turn1.body.json")
	want := readCapture(t, "bedrock-mode-turn1.body.json")
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())

	got, err := tr.TranslateRequest(body, captureBeta(t, "anthropic-turn1.request.json"), true, "us.anthropic.claude-opus-5-5")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream"; got.Path != want {
		t.Errorf("Path = %q, want %q (bedrock-mode-turn1.request.json without the gateway prefix)", got.Path, want)
	}
	wantBetas := []string{"interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19", "thinking-token-count-2026-05-13"}
	if !slices.Equal(got.Betas, wantBetas) {
		t.Errorf("Betas = %q, want %q", got.Betas, wantBetas)
	}
	wantDropped := []string{"claude-code-20250219", "context-management-2025-06-27", "per-turn-control-2026-07-01",
		"mid-conversation-tool-changes-2026-07-01", "effort-2025-11-24"}
	if !slices.Equal(got.DroppedBetas, wantDropped) {
		t.Errorf("DroppedBetas = %q, want %q", got.DroppedBetas, wantDropped)
	}
	if want := []string{"messages[].output_config", "context_management"}; !slices.Equal(got.DroppedFields, want) {
		t.Errorf("DroppedFields = %q, want %q", got.DroppedFields, want)
	}

	g, w := decode(t, got.Body), decode(t, want)
	if !reflect.DeepEqual(g["anthropic_beta"], w["anthropic_beta"]) {
		t.Errorf("anthropic_beta = %v, want %v", g["anthropic_beta"], w["anthropic_beta"])
	}

	// The two captures are separate Claude Code sessions (Anthropic mode and
	// Bedrock mode) whose prompt text differs; these values are content, not
	// translation, and are taken from the expected side after checking they
	// exist on both.
	differences := []struct {
		path []any
		why  string
	}{
		{[]any{"metadata", "user_id"}, "embeds each session's own session_id"},
		{[]any{"system", 0, "text"}, "billing header carries a per-request cc_version hash (.580 vs .9a2)"},
		{[]any{"system", 2, "text"}, "Claude Code's Bedrock-mode system prompt has two extra paragraphs (pasted_content, privacy)"},
		{[]any{"messages", 0, "content", 1, "text"}, "the user typed different prompts (\"TOOLTEST run echo\" vs \"hello\")"},
		{[]any{"messages", 1, "content", 0, "text"}, "environment text names the Bedrock model id and a shorter deferred-tool list in Bedrock mode"},
	}
	for _, d := range differences {
		gv, wv := get(g, d.path...), get(w, d.path...)
		if gv == nil || wv == nil {
			t.Fatalf("difference %v (%s): missing on one side", d.path, d.why)
		}
		if reflect.DeepEqual(gv, wv) {
			t.Errorf("difference %v (%s) no longer differs; remove it from the list", d.path, d.why)
		}
		set(g, wv, d.path...)
	}
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		t.Errorf("translated body differs from Claude Code's own Bedrock body:\n got %.2000s\nwant %.2000s", gj, wj)
	}

	// Key order: kept members keep their order and the Bedrock members are
	// appended. Claude Code instead puts anthropic_beta where
	// context_management was; object member order carries no meaning in
	// JSON and Bedrock does not depend on it.
	wantKeys := []string{"messages", "system", "tools", "metadata", "max_tokens", "thinking", "output_config", "anthropic_beta", "anthropic_version"}
	if k := topKeys(t, got.Body); !slices.Equal(k, wantKeys) {
		t.Errorf("key order = %q, want %q", k, wantKeys)
	}
	ccKeys := []string{"messages", "system", "tools", "metadata", "max_tokens", "thinking", "anthropic_beta", "output_config", "anthropic_version"}
	if k := topKeys(t, want); !slices.Equal(k, ccKeys) {
		t.Errorf("Claude Code's key order = %q, want %q", k, ccKeys)
	}

	// Nested content is copied byte-for-byte.
	for _, key := range []string{`"tools":`, `"system":`} {
		start := bytes.Index(body, []byte(key))
		end := bytes.Index(body[start:], []byte(`}],"`)) + start + 2
		if !bytes.Contains(got.Body, body[start:end]) {
			t.Errorf("%s value not copied verbatim", key)
		}
	}
}

func TestTranslateUnknown(t *testing.T) {
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())
	tests := []struct {
		name, body, beta string
		stream           bool
		model            string
		wantPath         string
		wantBody         string
		wantDroppedBetas []string
		wantDroppedField []string
	}{
		{
			name:             "unknown beta and field",
			body:             `{"model":"claude-opus-5-5","max_tokens":5,"future_knob":{"a":[1,2]},"messages":[{"role":"user","content":"hi"}],"stream":true}`,
			beta:             "never-seen-2030-01-01, interleaved-thinking-2025-05-14",
			stream:           true,
			model:            "us.anthropic.claude-opus-5-5",
			wantPath:         "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream",
			wantBody:         `{"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"anthropic_beta":["interleaved-thinking-2025-05-14"],"anthropic_version":"bedrock-2023-05-31"}`,
			wantDroppedBetas: []string{"never-seen-2030-01-01"},
			wantDroppedField: []string{"future_knob"},
		},
		{
			name:     "no betas, not streaming, ARN escaped, whitespace",
			body:     " {\n \"messages\" : [ {\"role\":\"user\", \"content\":\"x\"} ] ,\"max_tokens\":1 }\n",
			model:    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-5-5",
			wantPath: "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-opus-5-5/invoke",
			wantBody: `{"messages":[ {"role":"user", "content":"x"} ],"max_tokens":1,"anthropic_version":"bedrock-2023-05-31"}`,
		},
		{
			name:     "rename deduplicates, table order, client's bedrock members replaced",
			body:     `{"anthropic_version":"x","anthropic_beta":["y"],"stream":false}`,
			beta:     "tool-search-tool-2025-10-19,context-1m-2025-08-07,advanced-tool-use-2025-11-20,,context-1m-2025-08-07",
			model:    "m",
			wantPath: "/model/m/invoke",
			wantBody: `{"anthropic_beta":["tool-search-tool-2025-10-19","context-1m-2025-08-07"],"anthropic_version":"bedrock-2023-05-31"}`,
		},
		{
			name:             "escaped key names are decoded before the allow-list",
			body:             `{"m\u006fdel":"x","max_t\u006fkens":3,"con\u0074ext_management":{}}`,
			beta:             "effort-2025-11-24,effort-2025-11-24",
			model:            "m",
			wantPath:         "/model/m/invoke",
			wantBody:         `{"max_t\u006fkens":3,"anthropic_version":"bedrock-2023-05-31"}`,
			wantDroppedBetas: []string{"effort-2025-11-24"},
			wantDroppedField: []string{"context_management"},
		},
		{
			name:             "message members filtered, other elements verbatim",
			body:             `{"messages":[{"role":"user","content":"a"}, {"role":"user","output_config":{"effort":"low"},"content":"b","x":1},"odd"]}`,
			model:            "m",
			wantPath:         "/model/m/invoke",
			wantBody:         `{"messages":[{"role":"user","content":"a"}, {"role":"user","content":"b"},"odd"],"anthropic_version":"bedrock-2023-05-31"}`,
			wantDroppedField: []string{"messages[].output_config", "messages[].x"},
		},
		{
			name:     "empty object",
			body:     `{}`,
			model:    "m",
			wantPath: "/model/m/invoke",
			wantBody: `{"anthropic_version":"bedrock-2023-05-31"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tr.TranslateRequest([]byte(tt.body), tt.beta, tt.stream, tt.model)
			if err != nil {
				t.Fatal(err)
			}
			if got.Path != tt.wantPath {
				t.Errorf("Path = %q, want %q", got.Path, tt.wantPath)
			}
			if string(got.Body) != tt.wantBody {
				t.Errorf("Body = %s\nwant   %s", got.Body, tt.wantBody)
			}
			if !json.Valid(got.Body) {
				t.Errorf("Body is not valid JSON")
			}
			if !slices.Equal(got.DroppedBetas, tt.wantDroppedBetas) {
				t.Errorf("DroppedBetas = %q, want %q", got.DroppedBetas, tt.wantDroppedBetas)
			}
			if !slices.Equal(got.DroppedFields, tt.wantDroppedField) {
				t.Errorf("DroppedFields = %q, want %q", got.DroppedFields, tt.wantDroppedField)
			}
		})
	}
}

func TestTranslateErrors(t *testing.T) {
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())
	for _, body := range []string{``, `[]`, `{"a":1`, `{"a":1}x`, `{"a":01}`, `{"a":"\x01"}`, `"s"`} {
		if _, err := tr.TranslateRequest([]byte(body), "", true, "m"); err == nil {
			t.Errorf("TranslateRequest(%q): want error", body)
		}
	}
	if _, err := tr.TranslateRequest([]byte(`{}`), "", true, ""); err != ErrEmptyModel {
		t.Errorf("empty model: err = %v, want ErrEmptyModel", err)
	}
	deep := strings.Repeat("[", jsonscan.MaxDepth-1) + strings.Repeat("]", jsonscan.MaxDepth-1)
	if _, err := tr.TranslateRequest([]byte(`{"a":`+deep+`}`), "", true, "m"); err != nil {
		t.Errorf("depth %d: %v", jsonscan.MaxDepth, err)
	}
	if _, err := tr.TranslateRequest([]byte(`{"a":[`+deep+`]}`), "", true, "m"); err == nil {
		t.Errorf("depth %d: want error", jsonscan.MaxDepth+1)
	}
}

func TestModelPath(t *testing.T) {
	tests := []struct {
		id     string
		stream bool
		want   string
	}{
		{"anthropic.claude-sonnet-4-5-20250929-v1:0", true, "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"},
		{"global.anthropic.claude-opus-4-6-v1", false, "/model/global.anthropic.claude-opus-4-6-v1/invoke"},
		{"a b~_", false, "/model/a%20b~_/invoke"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := ModelPath(tt.id, tt.stream); got != tt.want {
				t.Errorf("ModelPath(%q, %v) = %q, want %q", tt.id, tt.stream, got, tt.want)
			}
		})
	}
}

func TestMapError(t *testing.T) {
	cred := `{"type":"error","error":{"type":"api_error","message":"ccproxy: AWS Bedrock rejected the gateway's Bedrock credential; ask the gateway administrator to check it"}}`
	tests := []struct {
		name       string
		status     int
		header     string
		body       string
		wantStatus int
		wantBody   string
		wantCred   bool
	}{
		{"throttling header with suffix", 429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", `{"message":"Too many requests, please wait before trying again."}`,
			429, `{"type":"error","error":{"type":"rate_limit_error","message":"Too many requests, please wait before trying again."}}`, false},
		{"quota from body __type", 400, "", `{"__type":"com.amazon.bedrock#ServiceQuotaExceededException","Message":"quota"}`,
			429, `{"type":"error","error":{"type":"rate_limit_error","message":"quota"}}`, false},
		{"validation", 400, "ValidationException", `{"message":"invalid beta flag"}`,
			400, `{"type":"error","error":{"type":"invalid_request_error","message":"invalid beta flag"}}`, false},
		{"service unavailable", 503, "ServiceUnavailableException", `{"message":"Bedrock is unable to process your request."}`,
			529, `{"type":"error","error":{"type":"overloaded_error","message":"Bedrock is unable to process your request."}}`, false},
		{"model timeout", 408, "ModelTimeoutException", `{"message":"Model has timed out"}`,
			504, `{"type":"error","error":{"type":"timeout_error","message":"Model has timed out"}}`, false},
		{"access denied", 403, "AccessDeniedException", `{"message":"User: arn:aws:iam::1:user/x is not authorized"}`,
			500, cred, true},
		{"unrecognized client", 403, "UnrecognizedClientException:http://x", `{"message":"The security token included in the request is invalid."}`,
			500, cred, true},
		{"model not ready", 429, "ModelNotReadyException", `{"message":"not ready"}`,
			429, `{"type":"error","error":{"type":"rate_limit_error","message":"not ready"}}`, false},
		{"not found", 404, "ResourceNotFoundException", `{"message":"Model not found"}`,
			404, `{"type":"error","error":{"type":"not_found_error","message":"Model not found"}}`, false},
		{"internal server", 500, "InternalServerException", `{"message":"boom"}`,
			500, `{"type":"error","error":{"type":"api_error","message":"boom"}}`, false},
		{"model error without message", 424, "ModelErrorException", ``,
			500, `{"type":"error","error":{"type":"api_error","message":"AWS Bedrock returned ModelErrorException"}}`, false},
		{"no type, 429", 429, "", `not json`,
			429, `{"type":"error","error":{"type":"rate_limit_error","message":"AWS Bedrock returned HTTP 429"}}`, false},
		{"no type, 503", 503, "", ``,
			529, `{"type":"error","error":{"type":"overloaded_error","message":"AWS Bedrock returned HTTP 503"}}`, false},
		{"no type, 502", 502, "", `{"message":"bad gateway"}`,
			500, `{"type":"error","error":{"type":"api_error","message":"bad gateway"}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MapError(tt.status, tt.header, []byte(tt.body))
			if got.Status != tt.wantStatus || string(got.Body) != tt.wantBody || got.CredentialRejected != tt.wantCred {
				t.Errorf("MapError(%d, %q, %q) = %d %s cred=%v, want %d %s cred=%v",
					tt.status, tt.header, tt.body, got.Status, got.Body, got.CredentialRejected, tt.wantStatus, tt.wantBody, tt.wantCred)
			}
		})
	}
}

func TestNewTranslatorTable(t *testing.T) {
	tr := NewTranslator(bedrockpolicy.BetaTable{Version: "v9", Rules: []bedrockpolicy.BetaRule{
		{Anthropic: "a", Action: bedrockpolicy.BetaRename, Bedrock: `q"uote`},
		{Anthropic: "b", Action: bedrockpolicy.BetaKeep},
		{Anthropic: "a", Action: bedrockpolicy.BetaKeep},   // later duplicate ignored
		{Anthropic: "c", Action: bedrockpolicy.BetaRename}, // rename to nothing: dropped
	}}, bedrockpolicy.FieldTable{Version: "f1"})
	got, err := tr.TranslateRequest([]byte(`{"x":1}`), "b,a,c", false, "m")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"anthropic_beta":["q\"uote","b"],"anthropic_version":"bedrock-2023-05-31"}`; string(got.Body) != want {
		t.Errorf("Body = %s, want %s", got.Body, want)
	}
	if !slices.Equal(got.DroppedBetas, []string{"c"}) || !slices.Equal(got.DroppedFields, []string{"x"}) {
		t.Errorf("dropped = %q %q", got.DroppedBetas, got.DroppedFields)
	}
	if b, f := tr.Versions(); b != "v9" || f != "f1" {
		t.Errorf("Versions() = %q, %q", b, f)
	}
}

func BenchmarkTranslateTurn1(b *testing.B) {
	body := readCapture(b, "anthropic-turn1.body.json")
	beta := captureBeta(b, "anthropic-turn1.request.json")
	tr := NewTranslator(bedrockpolicy.DefaultBetaTable(), bedrockpolicy.DefaultFieldTable())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.TranslateRequest(body, beta, true, "us.anthropic.claude-opus-5-5"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(body)), "body-bytes")
}
