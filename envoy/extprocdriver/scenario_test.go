package extprocdriver

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadRepositoryScenarios loads the scenarios make bench runs.
func TestLoadRepositoryScenarios(t *testing.T) {
	files, err := filepath.Glob("../../extproc/testdata/bench/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			s, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			// Streamed answers come in 4 chunks; a JSON answer (BUFFERED) in one.
			chunks := 4
			if strings.Contains(f, "nonstream") {
				chunks = 1
			}
			if s.Name() == "" || len(s.reqBody) == 0 || len(s.respChunks) != chunks {
				t.Errorf("name %q, %d body bytes, %d response chunks; want %d", s.Name(), len(s.reqBody), len(s.respChunks), chunks)
			}
		})
	}
}

func TestCompileRequest(t *testing.T) {
	dir := t.TempDir()
	capture := `{"method": "POST", "path": "/v1/messages", "headers": {"Host": "gw:8080", "Content-Length": "999", "Connection": "keep-alive",
		"X-B": "b", "X-A": "a", "Accept": "*/*"}}`
	if err := os.WriteFile(filepath.Join(dir, "c.json"), []byte(capture), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := &Spec{
		Request: RequestSpec{
			Capture: "c.json", Path: "/ak/k/v1/messages",
			Headers: map[string]string{"X-A": "override", "X-New": "n"}, RemoveHeaders: []string{"Accept"},
			Body: `{"model":"m","stream":true,"max_tokens":1}`, BodyJSONSet: map[string]json.RawMessage{"stream": []byte("false"), "extra": []byte(`{"k":1}`)},
		},
		RouterFilter: FilterSpec{ProcessingMode: []byte(`{}`)},
	}
	s, err := Compile(spec, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := ":authority: gw:8080\n:path: /ak/k/v1/messages\n:method: POST\n:scheme: http\nx-a: override\nx-b: b\nx-new: n\ncontent-length: 59\n"
	if got := headerList(Message{Headers: s.reqHeaders}); got != want {
		t.Errorf("headers:\n%s\nwant\n%s", got, want)
	}
	if got, want := string(s.reqBody), `{"model":"m","stream":false,"max_tokens":1,"extra":{"k":1}}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	mode := []byte(`{"request_body_mode":"BUFFERED"}`)
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"no path", Spec{RouterFilter: FilterSpec{ProcessingMode: mode}}, "request: path is required (or a capture with one)"},
		{"no processing mode", Spec{Request: RequestSpec{Path: "/"}}, "router_filter: processing_mode is required"},
		{"unknown mode field", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: []byte(`{"request_body":"BUFFERED"}`)}},
			"router_filter: processing_mode: "},
		{"unplayable body mode", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: []byte(`{"response_body_mode":"FULL_DUPLEX_STREAMED"}`)}},
			"router_filter: processing_mode: body mode FULL_DUPLEX_STREAMED is not played by the driver"},
		{"trailers", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: []byte(`{"request_trailer_mode":"SEND"}`)}},
			"router_filter: processing_mode: trailer mode SEND is not played by the driver"},
		{"upstream response body", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: mode},
			UpstreamFilter: &FilterSpec{ProcessingMode: []byte(`{"response_body_mode":"STREAMED"}`)}},
			"upstream_filter: the driver plays an upstream filter's response body only in mode NONE"},
		{"two bodies", Spec{Request: RequestSpec{Path: "/", Body: "x", BodyFile: "y"}, RouterFilter: FilterSpec{ProcessingMode: mode}},
			"request: body_file and body are exclusive"},
		{"bad offsets", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: mode}, Response: ResponseSpec{Body: "abcdef", ChunkOffsets: []int{3, 2}}},
			"response: chunk_offsets [3 2]: want increasing offsets inside (0, 6)"},
		{"missing expected body", Spec{Request: RequestSpec{Path: "/"}, RouterFilter: FilterSpec{ProcessingMode: mode},
			Expect: Expectations{UpstreamRequest: &MessageExpect{BodyEqualsFile: "nope"}}}, "expect.upstream_request: body_equals_file: open "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(&tc.spec, t.TempDir())
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one starting %q", err, tc.want)
			}
		})
	}
}

func TestLoadRejectsUnknownFields(t *testing.T) {
	f := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(f, []byte(`{"name": "x", "requests": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f); err == nil || !strings.Contains(err.Error(), `unknown field "requests"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		body    string
		n       int
		offsets []int
		want    []string
	}{
		{"abcdefgh", 3, nil, []string{"ab", "cde", "fgh"}},
		{"ab", 5, nil, []string{"a", "b"}},
		{"abcdef", 0, []int{1, 4}, []string{"a", "bcd", "ef"}},
		{"", 4, nil, nil},
	}
	for _, tc := range tests {
		got, err := split([]byte(tc.body), tc.n, tc.offsets)
		if err != nil {
			t.Fatal(err)
		}
		var gs []string
		for _, c := range got {
			gs = append(gs, string(c))
		}
		if strings.Join(gs, "|") != strings.Join(tc.want, "|") || len(gs) != len(tc.want) {
			t.Errorf("split(%q, %d, %v) = %q, want %q", tc.body, tc.n, tc.offsets, gs, tc.want)
		}
	}
}

func TestParseProc(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "4242 (bench (a) b) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 9 0 123 456 789 18446744073709551615\n"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 2870*time.Millisecond {
		t.Errorf("CPU %v, want 2.87s", cpu)
	}
	if _, err := parseStatCPU([]byte("4242 (x S 1")); err == nil {
		t.Error("a malformed stat parsed")
	}
	status := "Name:\tbench\nVmPeak:\t  900 kB\nVmHWM:\t   4096 kB\nVmRSS:\t   2048 kB\n"
	rss, peak, err := parseStatusMemory([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if rss != 2<<20 || peak != 4<<20 {
		t.Errorf("rss %d, peak %d", rss, peak)
	}
}
