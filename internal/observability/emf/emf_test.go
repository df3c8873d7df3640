package emf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/observability/emf"
)

var fixed = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) // 1795694400000 ms

func newWriter(buf *bytes.Buffer) *emf.Writer {
	return emf.NewWriter(buf, emf.Options{Now: func() time.Time { return fixed }})
}

func TestRequestsExactJSON(t *testing.T) {
	var buf bytes.Buffer
	w := newWriter(&buf)
	err := w.Requests(context.Background(), []emf.Request{{
		Provider: "bedrock", Model: "claude-sonnet-4-6", Status: 200, Stream: true,
		Latency: 1500 * time.Millisecond, TTFT: 250 * time.Millisecond, HasTTFT: true,
		Input: 1200, Output: 340, CacheWrite1h: 7,
		CostUSD: decimal.RequireFromString("0.031250"), FallbackReason: "plan_429", UserID: "u1",
	}})
	if err != nil {
		t.Fatal(err)
	}
	ns := `{"Namespace":"ClaudeCodeProxy",`
	tok := func(kind string, n int) string {
		return `{"_aws":{"Timestamp":1795694400000,"CloudWatchMetrics":[` + ns + `"Dimensions":[["Provider","Model","TokenType"]],"Metrics":[{"Name":"proxy.tokens","Unit":"Count"}]}]},` +
			`"Provider":"bedrock","Model":"claude-sonnet-4-6","TokenType":"` + kind + `","proxy.tokens":` + strconv.Itoa(n) + "}\n"
	}
	want := `{"_aws":{"Timestamp":1795694400000,"CloudWatchMetrics":[` +
		ns + `"Dimensions":[["Provider","Model","Status","Stream"]],"Metrics":[{"Name":"proxy.requests","Unit":"Count"},{"Name":"proxy.latency","Unit":"Milliseconds"}]},` +
		ns + `"Dimensions":[["Provider","Model"]],"Metrics":[{"Name":"proxy.ttft","Unit":"Milliseconds"},{"Name":"proxy.cost","Unit":"None"}]},` +
		ns + `"Dimensions":[["FromProvider","ToProvider","Reason"]],"Metrics":[{"Name":"proxy.fallbacks","Unit":"Count"}]}]},` +
		`"Provider":"bedrock","Model":"claude-sonnet-4-6","Status":"200","Stream":"true","FromProvider":"anthropic","ToProvider":"bedrock","Reason":"plan_429",` +
		`"proxy.requests":1,"proxy.latency":1500,"proxy.ttft":250,"proxy.cost":0.03125,"proxy.fallbacks":1}` + "\n" +
		tok("input", 1200) + tok("output", 340) + tok("cache_write", 7) + tok("cache_write_1h", 7)
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		checkSpec(t, line)
	}
}

func TestRequestsErrorsAndPerUser(t *testing.T) {
	var buf bytes.Buffer
	w := emf.NewWriter(&buf, emf.Options{Namespace: "ns", PerUser: true, Now: func() time.Time { return fixed }})
	err := w.Requests(context.Background(), []emf.Request{{Provider: "anthropic", Status: 429, Latency: time.Second, UserID: "u1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"_aws":{"Timestamp":1795694400000,"CloudWatchMetrics":[` +
		`{"Namespace":"ns","Dimensions":[["Provider","Model","Status","Stream"]],"Metrics":[{"Name":"proxy.requests","Unit":"Count"},{"Name":"proxy.latency","Unit":"Milliseconds"}]},` +
		`{"Namespace":"ns","Dimensions":[["Provider","Model"]],"Metrics":[{"Name":"proxy.cost","Unit":"None"}]},` +
		`{"Namespace":"ns","Dimensions":[["Provider","ErrorType"]],"Metrics":[{"Name":"proxy.errors","Unit":"Count"}]},` +
		`{"Namespace":"ns","Dimensions":[["UserId"]],"Metrics":[{"Name":"proxy.user.requests","Unit":"Count"},{"Name":"proxy.user.tokens","Unit":"Count"},{"Name":"proxy.user.cost","Unit":"None"}]}]},` +
		`"Provider":"anthropic","Model":"unknown","Status":"429","Stream":"false","ErrorType":"rate_limit_error","UserId":"u1",` +
		`"proxy.requests":1,"proxy.latency":1000,"proxy.cost":0,"proxy.errors":1,"proxy.user.requests":1,"proxy.user.tokens":0,"proxy.user.cost":0}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	checkSpec(t, bytes.TrimSpace(buf.Bytes()))
}

// checkSpec checks one line against the EMF specification's rules: the root
// is a JSON object with an _aws metadata object holding a millisecond
// Timestamp and a CloudWatchMetrics array of MetricDirectives (Namespace;
// Dimensions: DimensionSets of at most 30 keys, each key a root member
// whose value is a string; Metrics: at most 100 MetricDefinitions, each
// Name a root member whose value is a number, Unit a CloudWatch unit).
func checkSpec(t *testing.T, line []byte) {
	t.Helper()
	var root map[string]json.RawMessage
	if err := json.Unmarshal(line, &root); err != nil {
		t.Fatalf("not a JSON object: %v", err)
	}
	var meta struct {
		Timestamp         *int64
		CloudWatchMetrics []struct {
			Namespace  string
			Dimensions [][]string
			Metrics    []struct{ Name, Unit string }
		}
	}
	if err := json.Unmarshal(root["_aws"], &meta); err != nil {
		t.Fatalf("_aws: %v", err)
	}
	if meta.Timestamp == nil || *meta.Timestamp < 1e12 {
		t.Errorf("Timestamp %v is not milliseconds since the epoch", meta.Timestamp)
	}
	if len(meta.CloudWatchMetrics) == 0 {
		t.Fatal("no MetricDirective")
	}
	units := map[string]bool{"Count": true, "None": true, "Milliseconds": true}
	for _, d := range meta.CloudWatchMetrics {
		if d.Namespace == "" || len(d.Metrics) == 0 || len(d.Metrics) > 100 {
			t.Errorf("directive %+v", d)
		}
		for _, set := range d.Dimensions {
			if len(set) > 30 {
				t.Errorf("dimension set of %d keys", len(set))
			}
			for _, k := range set {
				var s string
				if err := json.Unmarshal(root[k], &s); err != nil || s == "" {
					t.Errorf("dimension %s = %s, want a non-empty string", k, root[k])
				}
			}
		}
		for _, m := range d.Metrics {
			var n float64
			if err := json.Unmarshal(root[m.Name], &n); err != nil {
				t.Errorf("metric %s = %s, want a number", m.Name, root[m.Name])
			}
			if !units[m.Unit] {
				t.Errorf("metric %s unit %q", m.Name, m.Unit)
			}
		}
	}
}

func TestOffIsNil(t *testing.T) {
	for _, mode := range []string{"", "off"} {
		w, err := emf.New(mode, emf.Options{})
		if err != nil || w != nil {
			t.Fatalf("New(%q) = %v, %v", mode, w, err)
		}
		// A nil Writer is a no-op.
		if err := w.Requests(context.Background(), []emf.Request{{Provider: "bedrock"}}); err != nil {
			t.Fatal(err)
		}
	}
	if w, err := emf.New("stdout", emf.Options{}); err != nil || w == nil {
		t.Fatalf("New(stdout) = %v, %v", w, err)
	}
	if _, err := emf.New("cloudwatch", emf.Options{}); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorAndConcurrency(t *testing.T) {
	if err := emf.NewWriter(failing{}, emf.Options{}).Requests(context.Background(), []emf.Request{{Provider: "bedrock", Model: "m"}}); err == nil {
		t.Fatal("write error not returned")
	}
	var buf bytes.Buffer
	w := newWriter(&buf)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				_ = w.Requests(context.Background(), []emf.Request{{Provider: "anthropic", Model: "m", Status: 200, CostUSD: decimal.New(1, -2)}})
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("interleaved line %q", l)
		}
	}
}
