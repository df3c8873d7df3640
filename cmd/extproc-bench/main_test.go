package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The test binary doubles as the server the driver starts: with
// fakeServerEnv set it serves a processor that changes nothing on that
// address until SIGINT, then exits with the status in fakeExitEnv.
const (
	fakeServerEnv = "EXTPROC_BENCH_TEST_SERVE"
	fakeExitEnv   = "EXTPROC_BENCH_TEST_EXIT"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(fakeServerEnv); addr != "" {
		os.Exit(fakeServer(addr))
	}
	os.Exit(m.Run())
}

func fakeServer(addr string) int {
	lis, err := net.Listen("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		return 2
	}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, unchangedProcessor{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	if err := srv.Serve(lis); err != nil {
		return 2
	}
	code, _ := strconv.Atoi(os.Getenv(fakeExitEnv))
	return code
}

// unchangedProcessor answers every message with the empty reply of its type.
type unchangedProcessor struct {
	extprocsvc.UnimplementedExternalProcessorServer
}

func (unchangedProcessor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		cr := &extprocsvc.CommonResponse{}
		resp := &extprocsvc.ProcessingResponse{}
		switch req.GetRequest().(type) {
		case *extprocsvc.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: cr}}
		case *extprocsvc.ProcessingRequest_RequestBody:
			resp.Response = &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: cr}}
		case *extprocsvc.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: cr}}
		case *extprocsvc.ProcessingRequest_ResponseBody:
			resp.Response = &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{Response: cr}}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// scenario writes a scenario for the unchanged processor; expectHeader is
// an x-test value the routed request must carry.
func scenario(t *testing.T, dir, expectHeader string) string {
	t.Helper()
	spec := map[string]any{
		"name":          "test",
		"request":       map[string]any{"path": "/v1/messages", "headers": map[string]string{"x-test": "1"}, "body": `{"a":1}`},
		"router_filter": map[string]any{"processing_mode": map[string]string{"request_body_mode": "BUFFERED", "response_body_mode": "STREAMED"}},
		"response":      map[string]any{"body": "data: 1\n\ndata: 2\n\n", "chunks": 2},
		"expect": map[string]any{
			"routed_request":      map[string]any{"header_equals": map[string]string{"x-test": expectHeader}},
			"downstream_response": map[string]any{"body_contains": []string{"data: 2"}},
		},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "scenario.json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// serverArgs is the command line that starts the fake server on addr.
func serverArgs(t *testing.T, addr string, exit int) []string {
	t.Setenv(fakeServerEnv, addr)
	t.Setenv(fakeExitEnv, strconv.Itoa(exit))
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--", self}
}

func TestRunStartsMeasuresAndStopsTheServer(t *testing.T) {
	dir := t.TempDir()
	addr := "unix://" + filepath.Join(dir, "s.sock")
	var out, errOut bytes.Buffer
	args := append([]string{"-scenario", scenario(t, dir, "1"), "-addr", addr, "-n", "50", "-warmup", "10", "-repeat", "3", "-c", "2"}, serverArgs(t, addr, 0)...)
	if err := run(t.Context(), args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "test: C=2, 50 exchanges, server pid ") {
		t.Fatalf("output:\n%s", out.String())
	}
	for i, label := range []string{"run 1/3:", "run 2/3:", "run 3/3:", "median:"} {
		l := lines[i+1]
		if !strings.HasPrefix(l, label) || !strings.Contains(l, " 50 exchanges in ") || !strings.Contains(l, ", 5.0 messages/exchange, ") || !strings.Contains(l, ", server CPU ") {
			t.Errorf("line %q does not report 50 exchanges of 5 messages with the server's CPU", l)
		}
	}
}

func TestRunJSON(t *testing.T) {
	dir := t.TempDir()
	addr := "unix://" + filepath.Join(dir, "s.sock")
	var out bytes.Buffer
	args := append([]string{"-scenario", scenario(t, dir, "1"), "-addr", addr, "-n", "20", "-warmup", "0", "-json"}, serverArgs(t, addr, 0)...)
	if err := run(t.Context(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if r["label"] != "run 1/1" || r["exchanges"] != 20.0 || r["messages_per_exchange"] != 5.0 || r["server_rss_bytes"] == nil || r["server_cpu_per_req_us"] == nil {
		t.Errorf("JSON result %v", r)
	}
}

func TestRunDump(t *testing.T) {
	dir := t.TempDir()
	addr := "unix://" + filepath.Join(dir, "s.sock")
	var out bytes.Buffer
	args := append([]string{"-scenario", scenario(t, dir, "1"), "-addr", addr, "-dump", "-dump-dir", dir}, serverArgs(t, addr, 0)...)
	if err := run(t.Context(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"== scenario: test\n", "== router ->\n", "== router <-\n", "== 5 messages\n", "== downstream_response (1 headers, 18 body bytes)\n", "== expectations: OK\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dump lacks %q:\n%s", want, out.String())
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "downstream_response.body")); err != nil || string(b) != "data: 1\n\ndata: 2\n\n" {
		t.Errorf("dumped body %q, %v", b, err)
	}
}

func TestRunFailures(t *testing.T) {
	tests := []struct {
		name   string
		expect string // the routed request's x-test
		exit   int    // the server's exit status after SIGINT
		want   string
	}{
		{"an unmet expectation", "2", 0, `run 1: exchange 1: routed_request: header x-test = "1", want "2"`},
		{"a server that does not stop cleanly", "1", 3, "the server did not shut down cleanly: exit status 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr := "unix://" + filepath.Join(dir, "s.sock")
			args := append([]string{"-scenario", scenario(t, dir, tc.expect), "-addr", addr, "-n", "5", "-warmup", "0", "-c", "1"}, serverArgs(t, addr, tc.exit)...)
			err := run(t.Context(), args, io.Discard, io.Discard)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("run = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestRunServerThatNeverListens(t *testing.T) {
	dir := t.TempDir()
	addr := "unix://" + filepath.Join(dir, "s.sock")
	err := run(t.Context(), []string{"-scenario", scenario(t, dir, "1"), "-addr", addr, "--", "false"}, io.Discard, io.Discard)
	if err == nil || err.Error() != "the server exited before accepting connections on "+addr+": exit status 1" {
		t.Fatalf("run = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "-scenario is required"},
		{[]string{"-scenario", "s", "-c", "0"}, "-c, -repeat and -conns must be at least 1, -warmup at least 0"},
		{[]string{"-scenario", "s", "-pid", "1", "--", "server"}, "-pid and a server command are exclusive"},
	}
	for _, tc := range tests {
		if _, err := parse(tc.args, io.Discard); err == nil || err.Error() != tc.want {
			t.Errorf("parse(%q) = %v, want %s", tc.args, err, tc.want)
		}
	}
}
