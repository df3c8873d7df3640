// Package emf writes ccproxy's usage metrics in Amazon CloudWatch's
// embedded metric format (EMF): JSON log lines that CloudWatch Logs turns
// into metrics, so no PutMetricData calls and no AWS credentials are needed
// in the process — the CloudWatch agent, Fluent Bit, the awslogs driver of
// ECS or EKS Container Insights ships the lines, and CloudWatch extracts the
// metrics on ingestion.
//
// Each line is one EMF document for one (provider, model) pair:
//
//	{"_aws":{"Timestamp":1795660800000,"CloudWatchMetrics":[{"Namespace":"ccproxy",
//	  "Dimensions":[["Provider","Model"],["Provider"]],"Metrics":[{"Name":"Requests","Unit":"Count"},…]}]},
//	 "Provider":"bedrock","Model":"claude-sonnet-4-6","Requests":3,"InputTokens":1200,…,"CostUSD":0.0123}
//
// with the metrics Requests, InputTokens, OutputTokens, CacheReadTokens,
// CacheWrite5mTokens, CacheWrite1hTokens (unit Count) and CostUSD (unit None,
// in US dollars), each published under both dimension sets: per provider
// and model, and per provider. Events writes one line per (provider, model)
// present in a batch of usage events, summed; Usage writes one line for one
// record.
//
// The output is off by default (CCPROXY_CLOUDWATCH_EMF=off): New returns a
// nil *Writer for "off", and every method of a nil *Writer does nothing.
package emf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/store"
)

// DefaultNamespace is the CloudWatch namespace of the metrics.
const DefaultNamespace = "ccproxy"

// Output modes (CCPROXY_CLOUDWATCH_EMF).
const (
	Off    = "off"
	Stdout = "stdout"
)

// Record is the usage of one (provider, model) pair over one or more
// requests.
type Record struct {
	// Provider is "anthropic" (Plan) or "bedrock".
	Provider string
	// Model is the requested model; "unknown" when empty (CloudWatch
	// rejects empty dimension values).
	Model              string
	Requests           int64
	InputTokens        int64
	OutputTokens       int64
	CacheReadTokens    int64
	CacheWrite5mTokens int64
	CacheWrite1hTokens int64
	// CostUSD is the cost in US dollars: Bedrock spend, or the Plan's
	// list-price equivalent.
	CostUSD decimal.Decimal
}

// Options configure a Writer.
type Options struct {
	// Namespace is the CloudWatch namespace; DefaultNamespace when empty.
	Namespace string
	// Now stamps each document; time.Now when nil.
	Now func() time.Time
}

// Writer writes EMF documents, one JSON line each, to an io.Writer. It is
// safe for concurrent use; lines are never interleaved. A nil *Writer is
// valid and writes nothing.
type Writer struct {
	mu  sync.Mutex
	out io.Writer
	// directive is the encoded "CloudWatchMetrics" array, the same on every
	// line.
	directive json.RawMessage
	now       func() time.Time
}

// New returns a Writer for the CCPROXY_CLOUDWATCH_EMF mode: nil for "off"
// (or ""), a Writer on standard output for "stdout".
func New(mode string, opts Options) (*Writer, error) {
	switch mode {
	case "", Off:
		return nil, nil
	case Stdout:
		return NewWriter(os.Stdout, opts), nil
	}
	return nil, fmt.Errorf("emf: unknown output %q (want off or stdout)", mode)
}

// NewWriter returns a Writer on out.
func NewWriter(out io.Writer, opts Options) *Writer {
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	type metric struct {
		Name string `json:"Name"`
		Unit string `json:"Unit"`
	}
	type directive struct {
		Namespace  string     `json:"Namespace"`
		Dimensions [][]string `json:"Dimensions"`
		Metrics    []metric   `json:"Metrics"`
	}
	d := []directive{{
		Namespace:  opts.Namespace,
		Dimensions: [][]string{{"Provider", "Model"}, {"Provider"}},
		Metrics: []metric{
			{"Requests", "Count"}, {"InputTokens", "Count"}, {"OutputTokens", "Count"},
			{"CacheReadTokens", "Count"}, {"CacheWrite5mTokens", "Count"}, {"CacheWrite1hTokens", "Count"},
			{"CostUSD", "None"},
		},
	}}
	raw, err := json.Marshal(d)
	if err != nil {
		panic(err) // static data
	}
	return &Writer{out: out, directive: raw, now: opts.Now}
}

// document is one EMF line. Field order is the output's member order.
type document struct {
	AWS struct {
		Timestamp         int64           `json:"Timestamp"`
		CloudWatchMetrics json.RawMessage `json:"CloudWatchMetrics"`
	} `json:"_aws"`
	Provider           string      `json:"Provider"`
	Model              string      `json:"Model"`
	Requests           int64       `json:"Requests"`
	InputTokens        int64       `json:"InputTokens"`
	OutputTokens       int64       `json:"OutputTokens"`
	CacheReadTokens    int64       `json:"CacheReadTokens"`
	CacheWrite5mTokens int64       `json:"CacheWrite5mTokens"`
	CacheWrite1hTokens int64       `json:"CacheWrite1hTokens"`
	CostUSD            json.Number `json:"CostUSD"`
}

// Usage writes one line for r.
func (w *Writer) Usage(ctx context.Context, r Record) error {
	if w == nil {
		return nil
	}
	return w.write([]Record{r})
}

// Events writes the usage of a batch of events (as stored by the ingester),
// one line per (provider, requested model), in provider then model order.
// Each line sums that pair's events; Requests is how many there were.
func (w *Writer) Events(ctx context.Context, events []store.UsageEvent) error {
	if w == nil || len(events) == 0 {
		return nil
	}
	type key struct{ provider, model string }
	sums := map[key]*Record{}
	for i := range events {
		e := &events[i]
		k := key{string(e.Provider), e.RequestedModel}
		r := sums[k]
		if r == nil {
			r = &Record{Provider: k.provider, Model: k.model}
			sums[k] = r
		}
		r.Requests++
		r.InputTokens += e.InputTokens
		r.OutputTokens += e.OutputTokens
		r.CacheReadTokens += e.CacheReadTokens
		r.CacheWrite5mTokens += e.CacheWrite5mTokens
		r.CacheWrite1hTokens += e.CacheWrite1hTokens
		r.CostUSD = r.CostUSD.Add(e.CostUSD)
	}
	recs := make([]Record, 0, len(sums))
	for _, r := range sums {
		recs = append(recs, *r)
	}
	slices.SortFunc(recs, func(a, b Record) int {
		if c := strings.Compare(a.Provider, b.Provider); c != 0 {
			return c
		}
		return strings.Compare(a.Model, b.Model)
	})
	return w.write(recs)
}

// write encodes recs and writes them with one Write call.
func (w *Writer) write(recs []Record) error {
	var buf bytes.Buffer
	ts := w.now().UnixMilli()
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, r := range recs {
		d := document{
			Provider: dimension(r.Provider), Model: dimension(r.Model), Requests: r.Requests,
			InputTokens: r.InputTokens, OutputTokens: r.OutputTokens, CacheReadTokens: r.CacheReadTokens,
			CacheWrite5mTokens: r.CacheWrite5mTokens, CacheWrite1hTokens: r.CacheWrite1hTokens,
			CostUSD: json.Number(r.CostUSD.String()),
		}
		d.AWS.Timestamp, d.AWS.CloudWatchMetrics = ts, w.directive
		if err := enc.Encode(&d); err != nil { // Encode ends each document with '\n'
			return fmt.Errorf("emf: encode: %w", err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.out.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("emf: write: %w", err)
	}
	return nil
}

func dimension(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}
