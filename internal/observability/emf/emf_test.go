package emf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/observability/emf"
	"github.com/ccproxy/ccproxy/internal/store"
)

var fixed = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) // 1795694400000 ms

func newWriter(buf *bytes.Buffer) *emf.Writer {
	return emf.NewWriter(buf, emf.Options{Now: func() time.Time { return fixed }})
}

const directive = `"CloudWatchMetrics":[{"Namespace":"ccproxy","Dimensions":[["Provider","Model"],["Provider"]],"Metrics":[` +
	`{"Name":"Requests","Unit":"Count"},{"Name":"InputTokens","Unit":"Count"},{"Name":"OutputTokens","Unit":"Count"},` +
	`{"Name":"CacheReadTokens","Unit":"Count"},{"Name":"CacheWrite5mTokens","Unit":"Count"},{"Name":"CacheWrite1hTokens","Unit":"Count"},` +
	`{"Name":"CostUSD","Unit":"None"}]}]`

func TestUsageExactJSON(t *testing.T) {
	var buf bytes.Buffer
	w := newWriter(&buf)
	err := w.Usage(context.Background(), emf.Record{
		Provider: "bedrock", Model: "claude-sonnet-4-6", Requests: 1, InputTokens: 1200, OutputTokens: 340,
		CacheReadTokens: 50000, CacheWrite5mTokens: 2000, CacheWrite1hTokens: 0,
		CostUSD: decimal.RequireFromString("0.031250"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"_aws":{"Timestamp":1795694400000,` + directive + `},` +
		`"Provider":"bedrock","Model":"claude-sonnet-4-6","Requests":1,"InputTokens":1200,"OutputTokens":340,` +
		`"CacheReadTokens":50000,"CacheWrite5mTokens":2000,"CacheWrite1hTokens":0,"CostUSD":0.03125}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	checkSpec(t, buf.Bytes())
}

func TestEventsOneLinePerProviderModel(t *testing.T) {
	ev := func(p store.Provider, model string, in, out int64, cost string) store.UsageEvent {
		return store.UsageEvent{Provider: p, RequestedModel: model, InputTokens: in, OutputTokens: out,
			CacheReadTokens: 10, CacheWrite5mTokens: 2, CacheWrite1hTokens: 1, CostUSD: decimal.RequireFromString(cost)}
	}
	var buf bytes.Buffer
	w := newWriter(&buf)
	err := w.Events(context.Background(), []store.UsageEvent{
		ev(store.ProviderBedrock, "claude-opus-5-5", 100, 10, "0.500000"),
		ev(store.ProviderAnthropic, "claude-opus-5-5", 1, 2, "0.000100"),
		ev(store.ProviderBedrock, "claude-opus-5-5", 300, 30, "1.250000"),
		ev(store.ProviderAnthropic, "", 5, 0, "0"),
	})
	if err != nil {
		t.Fatal(err)
	}
	head := `{"_aws":{"Timestamp":1795694400000,` + directive + `},`
	want := head + `"Provider":"anthropic","Model":"unknown","Requests":1,"InputTokens":5,"OutputTokens":0,"CacheReadTokens":10,"CacheWrite5mTokens":2,"CacheWrite1hTokens":1,"CostUSD":0}` + "\n" +
		head + `"Provider":"anthropic","Model":"claude-opus-5-5","Requests":1,"InputTokens":1,"OutputTokens":2,"CacheReadTokens":10,"CacheWrite5mTokens":2,"CacheWrite1hTokens":1,"CostUSD":0.0001}` + "\n" +
		head + `"Provider":"bedrock","Model":"claude-opus-5-5","Requests":2,"InputTokens":400,"OutputTokens":40,"CacheReadTokens":20,"CacheWrite5mTokens":4,"CacheWrite1hTokens":2,"CostUSD":1.75}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		checkSpec(t, line)
	}
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
	units := map[string]bool{"Count": true, "None": true}
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
		if err := w.Usage(context.Background(), emf.Record{Provider: "bedrock"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Events(context.Background(), []store.UsageEvent{{Provider: store.ProviderBedrock}}); err != nil {
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
	if err := emf.NewWriter(failing{}, emf.Options{}).Usage(context.Background(), emf.Record{Provider: "bedrock", Model: "m"}); err == nil {
		t.Fatal("write error not returned")
	}
	var buf bytes.Buffer
	w := newWriter(&buf)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				_ = w.Usage(context.Background(), emf.Record{Provider: "anthropic", Model: "m", Requests: 1, CostUSD: decimal.New(1, -2)})
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
