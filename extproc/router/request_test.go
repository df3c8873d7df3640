package router

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const captures = "../../testdata/claude-code-2.1.332/"

func TestScanRequest(t *testing.T) {
	tests := []struct {
		name string
		body string
		want requestFields
	}{
		{"typical", `{"model":"claude-opus-5-5","messages":[],"stream":true}`, requestFields{model: "claude-opus-5-5", stream: true}},
		{"no stream", `{"model":"m","max_tokens":1}`, requestFields{model: "m", stream: false}},
		{"stream false", `{"stream":false,"model":"m"}`, requestFields{model: "m", stream: false}},
		{"nested model ignored", `{"metadata":{"model":"x","stream":true},"model":"m"}`, requestFields{model: "m", stream: false}},
		{"model in a string ignored", `{"system":"\"model\":\"x\"","model":"m"}`, requestFields{model: "m", stream: false}},
		{"duplicate: last wins", `{"model":"a","model":"b","stream":true,"stream":false}`, requestFields{model: "b", stream: false}},
		{"escaped key and value", `{"mod\u0065l":"claude-\u00e9","stream":true}`, requestFields{model: "claude-é", stream: true}},
		{"non-string model", `{"model":5,"stream":"yes"}`, requestFields{}},
		{"case-sensitive keys", `{"Model":"m","STREAM":true}`, requestFields{}},
		{"malformed: what came before", `{"model":"m","messages":[`, requestFields{model: "m", stream: false}},
		{"not JSON", `model=m`, requestFields{}},
		{"empty", ``, requestFields{}},
		{"session of an old release", `{"metadata":{"user_id":"user_0612cb0c_account__session_1e20d4a2-4997-4bee-85ad-363aa50e87ee"},"model":"m"}`,
			requestFields{model: "m", session: "1e20d4a2-4997-4bee-85ad-363aa50e87ee"}},
		{"session of a newer release", `{"metadata":{"user_id":"{\"device_id\":\"12\",\"account_uuid\":\"\",\"session_id\":\"2336062e-9de8\"}"}}`,
			requestFields{session: "2336062e-9de8"}},
		{"user_id without a session", `{"metadata":{"user_id":"someone"}}`, requestFields{}},
		{"user_id not a string", `{"metadata":{"user_id":{"session_id":"x"}}}`, requestFields{}},
		{"metadata not an object", `{"metadata":"user_x_session_y"}`, requestFields{}},
		{"long session cut", `{"metadata":{"user_id":"u_session_` + strings.Repeat("s", 300) + `"}}`, requestFields{session: strings.Repeat("s", 128)}},
		{"long model cut", `{"model":"` + strings.Repeat("é", 200) + `"}`, requestFields{model: strings.Repeat("é", 128), stream: false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scanRequest([]byte(tt.body)); got != tt.want {
				t.Fatalf("scanRequest = %+v, want %+v", got, tt.want)
			}
		})
	}
	for _, name := range []string{"anthropic-turn1", "anthropic-turn2-tool-result"} {
		body, err := os.ReadFile(captures + name + ".body.json")
		if err != nil {
			t.Fatal(err)
		}
		if got := scanRequest(body); got.model != "claude-opus-5-5" || !got.stream || got.session == "" {
			t.Errorf("%s: scanRequest = %+v, want claude-opus-5-5, streamed, with a session", name, got)
		}
	}
}

// TestSessionOfEveryRelease checks that the session id is found in the
// main turn of every captured Claude Code release, in the body for the
// releases that send no x-claude-code-session-id header, and that it is
// the header's value for those that send both.
func TestSessionOfEveryRelease(t *testing.T) {
	dirs, err := filepath.Glob("../../testdata/claude-code-releases/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no release captures: %v", err)
	}
	for _, dir := range dirs {
		for _, mode := range []string{"anthropic", "bedrock-mode"} {
			t.Run(filepath.Base(dir)+"/"+mode, func(t *testing.T) {
				body, err := os.ReadFile(filepath.Join(dir, mode+"-main.body.json"))
				if err != nil {
					t.Fatal(err)
				}
				head, err := os.ReadFile(filepath.Join(dir, mode+"-main.request.json"))
				if err != nil {
					t.Fatal(err)
				}
				var req struct{ Headers map[string]string }
				if err := json.Unmarshal(head, &req); err != nil {
					t.Fatal(err)
				}
				var md struct {
					Metadata struct {
						UserID string `json:"user_id"`
					} `json:"metadata"`
				}
				if err := json.Unmarshal(body, &md); err != nil {
					t.Fatal(err)
				}
				got := sessionFromBody(body)
				if mode == "anthropic" {
					if f := scanRequest(body); f.session != got {
						t.Errorf("scanRequest session %q, sessionFromBody %q", f.session, got)
					}
				}
				if !uuidPattern.MatchString(got) || !strings.Contains(md.Metadata.UserID, got) {
					t.Fatalf("session %q from metadata.user_id %q; want the UUID it holds", got, md.Metadata.UserID)
				}
				if h := req.Headers["X-Claude-Code-Session-Id"]; h != "" && h != got {
					t.Errorf("header session %q, body session %q; want the same", h, got)
				}
			})
		}
	}
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// FuzzScanRequest holds scanRequest to encoding/json for every valid JSON
// object: decoding into a map gives exact, case-sensitive keys with the
// last duplicate winning.
func FuzzScanRequest(f *testing.F) {
	for _, name := range []string{"anthropic-turn1", "anthropic-turn2-tool-result"} {
		if body, err := os.ReadFile(captures + name + ".body.json"); err == nil {
			f.Add(body)
		}
	}
	f.Add([]byte(`{"model":"a","model":"b","stream":true,"stream":false}`))
	f.Add([]byte(`{"mod\u0065l":"claude-\u00e9","stream":true,"x":[{"model":1}]}`))
	f.Add([]byte(`{"model":null,"stream":null}`))
	f.Add([]byte(`{"metadata":{"user_id":"user_ab_account__session_1e20d4a2"},"model":"m"}`))
	f.Add([]byte(`{"metadata":{"user_id":"{\"session_id\":\"s1\",\"session_id\":\"s\u00e9\"}"}}`))
	f.Add([]byte(`{"model":"` + strings.Repeat("x", 300) + `"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := scanRequest(body) // must not panic on anything
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || m == nil {
			return
		}
		var want requestFields
		if raw, ok := m["model"]; ok {
			var s string
			if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
				want.model = truncate(s, maxModelLen)
			}
		}
		if raw, ok := m["stream"]; ok {
			want.stream = string(raw) == "true"
		}
		want.session = refSession(m["metadata"])
		if want.session == "\x00skip" {
			want.session = got.session
		}
		if got != want {
			t.Fatalf("scanRequest(%q) = %+v, encoding/json says %+v", body, got, want)
		}
	})
}

func TestSplitKeyPath(t *testing.T) {
	tests := []struct {
		path, key, rest string
		ok              bool
	}{
		{"/ak/K/v1/messages?beta=true", "K", "/v1/messages?beta=true", true},
		{"/ak/K/api/hello", "K", "/api/hello", true},
		{"/ak/K", "K", "/", true},
		{"/ak/K/", "K", "/", true},
		{"/ak/K?x=1", "K", "/?x=1", true},
		{"/ak//v1", "", "/v1", true},
		{"/ak", "", "/ak", false},
		{"/v1/messages", "", "/v1/messages", false},
		{"/AK/K/v1", "", "/AK/K/v1", false},
	}
	for _, tt := range tests {
		key, rest, ok := splitKeyPath([]byte(tt.path))
		if string(key) != tt.key || string(rest) != tt.rest || ok != tt.ok {
			t.Errorf("splitKeyPath(%q) = %q, %q, %v; want %q, %q, %v", tt.path, key, rest, ok, tt.key, tt.rest, tt.ok)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		path string
		want pathKind
	}{
		{"/v1/messages", pathMessages},
		{"/v1/messages?beta=true", pathMessages},
		{"/v1/messages/count_tokens?beta=true", pathCountTokens},
		{"/v1/models", pathModels},
		{"/v1/models?limit=5", pathModels},
		{"/v1/models/claude-opus-5-5", pathV1},
		{"/v1/messages/batches", pathV1},
		// Disguised spellings are refused, not forwarded unmetered.
		{"/v1/", pathNotCanonical},
		{"/v1/messages/", pathNotCanonical},
		{"/v1/%6dessages", pathNotCanonical},
		{"/v1/messages%3Fx", pathNotCanonical},
		{"/v1//messages", pathNotCanonical},
		{"/v1/./messages", pathNotCanonical},
		{"/v1/x/../messages", pathNotCanonical},
		{"/v1/messages/count_tokens/", pathNotCanonical},
		{"/v1/files/file_01?x=%2F", pathV1},
		{"/v1", pathOther},
		{"/api/hello", pathOther},
		{"/", pathOther},
		{"/?q=/v1/", pathOther},
	}
	for _, tt := range tests {
		if got := classify([]byte(tt.path)); got != tt.want {
			t.Errorf("classify(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

func TestHeaderParsing(t *testing.T) {
	versions := map[string]string{
		"claude-cli/2.1.332 (external, sdk-cli)": "2.1.332",
		"claude-cli/2.1.332":                     "2.1.332",
		"Bun/1.4.6":                              "Bun/1.4.6",
		"":                                       "",
		strings.Repeat("x", 100):                 strings.Repeat("x", 64),
		"bad\xffutf8":                            "badutf8",
	}
	for ua, want := range versions {
		if got := clientVersion([]byte(ua)); got != want {
			t.Errorf("clientVersion(%q) = %q, want %q", ua, got, want)
		}
	}
	sse := map[string]bool{
		"text/event-stream":                  true,
		"text/event-stream; charset=utf-8":   true,
		"Text/Event-Stream ;charset=utf-8":   true,
		"application/json":                   false,
		"text/event-streamx":                 false,
		"":                                   false,
		"application/vnd.amazon.eventstream": false,
	}
	for ct, want := range sse {
		if got := isEventStream([]byte(ct)); got != want {
			t.Errorf("isEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
	statuses := map[string]int{"200": 200, "429": 429, "20": 0, "2000": 0, "2x0": 0, "": 0}
	for s, want := range statuses {
		if got := parseStatus([]byte(s)); got != want {
			t.Errorf("parseStatus(%q) = %d, want %d", s, got, want)
		}
	}
}

// FuzzPaths holds the gateway's path parsing to its invariants on any input:
// the key comes only from the /ak/ segment, a metered kind is exactly its
// endpoint, a forwarded /v1/ path is canonical, and a Bedrock-mode path sent
// upstream is rebuilt, query-free, from a valid model id.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{
		"/ak/ak_x/v1/messages?beta=true", "/ak/k/v1/messages/count_tokens", "/ak/k", "/ak/k?q", "/v1/%6dessages",
		"/ak/k/bedrock/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream?x=1",
		"/ak/k/bedrock/model/..%2F..%2Fguardrail%2Fx/invoke", "/ak/k/v1/x/../messages", "/ak//v1/messages",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		key, rest, ok := splitKeyPath([]byte(path))
		if ok && (strings.ContainsAny(string(key), "/?") || len(rest) == 0 || rest[0] != '/') {
			t.Fatalf("splitKeyPath(%q) = %q, %q", path, key, rest)
		}
		kind := classify(rest)
		pathOnly, _, _ := strings.Cut(string(rest), "?")
		switch kind {
		case pathMessages:
			if pathOnly != "/v1/messages" {
				t.Fatalf("classify(%q) = messages", rest)
			}
		case pathCountTokens:
			if pathOnly != "/v1/messages/count_tokens" {
				t.Fatalf("classify(%q) = count_tokens", rest)
			}
		case pathV1:
			if !canonical([]byte(pathOnly)) {
				t.Fatalf("non-canonical %q forwarded", rest)
			}
		case pathBedrockModel:
			bp, ok := parseBedrockPath(rest)
			if !ok {
				return
			}
			if strings.ContainsAny(bp.upstream, "?#") || !validBedrockModelID(bp.model) ||
				!strings.HasPrefix(bp.upstream, "/model/") || strings.Count(bp.upstream, "/") != 3 {
				t.Fatalf("parseBedrockPath(%q) = %+v", rest, bp)
			}
		}
	})
}

// refSession is metadataSession written with encoding/json, the fuzz
// test's reference.
func refSession(metadata json.RawMessage) string {
	var md map[string]json.RawMessage
	if len(metadata) == 0 || metadata[0] != '{' || json.Unmarshal(metadata, &md) != nil {
		return ""
	}
	var userID string
	if raw := md["user_id"]; len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &userID) != nil {
		return ""
	}
	if strings.HasPrefix(userID, "{") {
		var inner map[string]json.RawMessage
		if json.Unmarshal([]byte(userID), &inner) != nil {
			// metadataSession scans up to the first syntax error; only
			// valid objects are compared.
			return "\x00skip"
		}
		var s string
		if raw := inner["session_id"]; len(raw) > 0 && raw[0] == '"' {
			_ = json.Unmarshal(raw, &s)
		}
		return headerString([]byte(s))
	}
	if _, s, ok := strings.Cut(userID, "_session_"); ok {
		return headerString([]byte(s))
	}
	return ""
}
