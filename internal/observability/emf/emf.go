// Package emf writes ccproxy's per-request metrics in Amazon CloudWatch's
// embedded metric format (EMF): JSON log lines that CloudWatch Logs turns
// into metrics, so no PutMetricData calls and no AWS credentials are needed
// in the process — the CloudWatch agent, Fluent Bit, the awslogs driver of
// ECS or EKS Container Insights ships the lines, and CloudWatch extracts the
// metrics on ingestion.
//
// The metric set is the one dashboards and alarms of the original Claude
// Code proxy were built on, with the same names, units and dimensions, in
// namespace ClaudeCodeProxy by default:
//
//	proxy.requests   Count         Provider, Model, Status, Stream
//	proxy.latency    Milliseconds  Provider, Model, Status, Stream
//	proxy.ttft       Milliseconds  Provider, Model (streamed requests that had a first token)
//	proxy.tokens     Count         Provider, Model, TokenType
//	proxy.cost       None (USD)    Provider, Model
//	proxy.errors     Count         Provider, ErrorType
//	proxy.fallbacks  Count         FromProvider, ToProvider, Reason
//
// and, only when Options.PerUser is set, proxy.user.requests (Count),
// proxy.user.tokens (Count, all token types) and proxy.user.cost (None)
// by UserId.
//
// Each request gives one line carrying the requests, latency, ttft, cost,
// errors, fallbacks and per-user metrics (one MetricDirective per dimension
// set), and one line per token type it used, since a line has one value per
// dimension: TokenType is input, output, cache_read, cache_write (all cache
// writes, as in the original) and, beside it, cache_write_5m and
// cache_write_1h, the split by cache lifetime.
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
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// DefaultNamespace is the CloudWatch namespace of the metrics, the
// original proxy's.
const DefaultNamespace = "ClaudeCodeProxy"

// Output modes (CCPROXY_CLOUDWATCH_EMF).
const (
	Off    = "off"
	Stdout = "stdout"
)

// Metric names.
const (
	MetricRequests     = "proxy.requests"
	MetricLatency      = "proxy.latency"
	MetricTTFT         = "proxy.ttft"
	MetricTokens       = "proxy.tokens"
	MetricCost         = "proxy.cost"
	MetricErrors       = "proxy.errors"
	MetricFallbacks    = "proxy.fallbacks"
	MetricUserRequests = "proxy.user.requests"
	MetricUserTokens   = "proxy.user.tokens"
	MetricUserCost     = "proxy.user.cost"
)

// Token types (the TokenType dimension of proxy.tokens).
const (
	TokenInput        = "input"
	TokenOutput       = "output"
	TokenCacheRead    = "cache_read"
	TokenCacheWrite   = "cache_write" // 5-minute and 1-hour writes together
	TokenCacheWrite5m = "cache_write_5m"
	TokenCacheWrite1h = "cache_write_1h"
)

// Request is the metrics of one request.
type Request struct {
	// Provider is "anthropic" (Plan) or "bedrock": the one that answered.
	Provider string
	// Model is the requested model, bounded by the caller (e.g. "other"
	// for models without a price of their own); "unknown" when empty
	// (CloudWatch rejects empty dimension values).
	Model string
	// Status is the HTTP status the request ended with; 0 when no
	// response came.
	Status int
	Stream bool
	// Latency is the time from the request to the end of the response.
	Latency time.Duration
	// TTFT is the time to the first token; reported for streamed requests
	// when HasTTFT.
	TTFT    time.Duration
	HasTTFT bool
	// Token counts, in Anthropic's terms (Input excludes cached tokens).
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int64
	// CostUSD is the cost in US dollars: Bedrock spend, or the Plan's
	// list-price equivalent.
	CostUSD decimal.Decimal
	// FallbackReason is set when Bedrock answered a Plan-first request
	// (e.g. plan_429, breaker_open).
	FallbackReason string
	// UserID is the user's id, used only when Options.PerUser.
	UserID string
}

// Options configure a Writer.
type Options struct {
	// Namespace is the CloudWatch namespace; DefaultNamespace when empty.
	Namespace string
	// PerUser adds the proxy.user.* metrics by UserId. Every user is a
	// dimension value, hence as many custom metrics: off by default.
	PerUser bool
	// Now stamps each document; time.Now when nil.
	Now func() time.Time
}

// Writer writes EMF documents, one JSON line each, to an io.Writer. It is
// safe for concurrent use; lines are never interleaved. A nil *Writer is
// valid and writes nothing.
type Writer struct {
	mu  sync.Mutex
	out io.Writer
	opt Options
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
	return &Writer{out: out, opt: opts}
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

type meta struct {
	Timestamp         int64       `json:"Timestamp"`
	CloudWatchMetrics []directive `json:"CloudWatchMetrics"`
}

// requestDoc is a request's line. Field order is the output's member order;
// optional members are left out when their directive is.
type requestDoc struct {
	AWS          meta         `json:"_aws"`
	Provider     string       `json:"Provider"`
	Model        string       `json:"Model"`
	Status       string       `json:"Status"`
	Stream       string       `json:"Stream"`
	ErrorType    string       `json:"ErrorType,omitempty"`
	FromProvider string       `json:"FromProvider,omitempty"`
	ToProvider   string       `json:"ToProvider,omitempty"`
	Reason       string       `json:"Reason,omitempty"`
	UserID       string       `json:"UserId,omitempty"`
	Requests     int64        `json:"proxy.requests"`
	Latency      int64        `json:"proxy.latency"`
	TTFT         *int64       `json:"proxy.ttft,omitempty"`
	Cost         json.Number  `json:"proxy.cost"`
	Errors       *int64       `json:"proxy.errors,omitempty"`
	Fallbacks    *int64       `json:"proxy.fallbacks,omitempty"`
	UserRequests *int64       `json:"proxy.user.requests,omitempty"`
	UserTokens   *int64       `json:"proxy.user.tokens,omitempty"`
	UserCost     *json.Number `json:"proxy.user.cost,omitempty"`
}

// tokenDoc is the line of one token type of a request.
type tokenDoc struct {
	AWS       meta   `json:"_aws"`
	Provider  string `json:"Provider"`
	Model     string `json:"Model"`
	TokenType string `json:"TokenType"`
	Tokens    int64  `json:"proxy.tokens"`
}

// Requests writes the lines of reqs, in order, with one Write call.
func (w *Writer) Requests(ctx context.Context, reqs []Request) error {
	if w == nil || len(reqs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	ts := w.opt.Now().UnixMilli()
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	ns := w.opt.Namespace
	one := int64(1)
	for i := range reqs {
		r := &reqs[i]
		provider, model := dimension(r.Provider), dimension(r.Model)
		d := requestDoc{
			Provider: provider, Model: model, Status: strconv.Itoa(r.Status), Stream: strconv.FormatBool(r.Stream),
			Requests: 1, Latency: r.Latency.Milliseconds(), Cost: json.Number(r.CostUSD.String()),
		}
		d.AWS.Timestamp = ts
		d.AWS.CloudWatchMetrics = append(d.AWS.CloudWatchMetrics, directive{
			Namespace: ns, Dimensions: [][]string{{"Provider", "Model", "Status", "Stream"}},
			Metrics: []metric{{MetricRequests, "Count"}, {MetricLatency, "Milliseconds"}},
		})
		perModel := directive{Namespace: ns, Dimensions: [][]string{{"Provider", "Model"}}}
		if r.Stream && r.HasTTFT {
			ms := r.TTFT.Milliseconds()
			d.TTFT = &ms
			perModel.Metrics = append(perModel.Metrics, metric{MetricTTFT, "Milliseconds"})
		}
		perModel.Metrics = append(perModel.Metrics, metric{MetricCost, "None"})
		d.AWS.CloudWatchMetrics = append(d.AWS.CloudWatchMetrics, perModel)
		if et := usage.ErrorType(r.Status); et != "" {
			d.ErrorType, d.Errors = et, &one
			d.AWS.CloudWatchMetrics = append(d.AWS.CloudWatchMetrics, directive{
				Namespace: ns, Dimensions: [][]string{{"Provider", "ErrorType"}}, Metrics: []metric{{MetricErrors, "Count"}},
			})
		}
		if r.FallbackReason != "" {
			d.FromProvider, d.ToProvider, d.Reason, d.Fallbacks = usage.ProviderAnthropic, provider, r.FallbackReason, &one
			d.AWS.CloudWatchMetrics = append(d.AWS.CloudWatchMetrics, directive{
				Namespace: ns, Dimensions: [][]string{{"FromProvider", "ToProvider", "Reason"}}, Metrics: []metric{{MetricFallbacks, "Count"}},
			})
		}
		if w.opt.PerUser && r.UserID != "" {
			total := r.Input + r.Output + r.CacheRead + r.CacheWrite5m + r.CacheWrite1h
			d.UserID, d.UserRequests, d.UserTokens, d.UserCost = r.UserID, &one, &total, &d.Cost
			d.AWS.CloudWatchMetrics = append(d.AWS.CloudWatchMetrics, directive{
				Namespace: ns, Dimensions: [][]string{{"UserId"}},
				Metrics: []metric{{MetricUserRequests, "Count"}, {MetricUserTokens, "Count"}, {MetricUserCost, "None"}},
			})
		}
		if err := enc.Encode(&d); err != nil { // Encode ends each document with '\n'
			return fmt.Errorf("emf: encode: %w", err)
		}
		tokens := directive{Namespace: ns, Dimensions: [][]string{{"Provider", "Model", "TokenType"}}, Metrics: []metric{{MetricTokens, "Count"}}}
		for _, tt := range [...]struct {
			kind string
			n    int64
		}{
			{TokenInput, r.Input}, {TokenOutput, r.Output}, {TokenCacheRead, r.CacheRead},
			{TokenCacheWrite, r.CacheWrite5m + r.CacheWrite1h}, {TokenCacheWrite5m, r.CacheWrite5m}, {TokenCacheWrite1h, r.CacheWrite1h},
		} {
			if tt.n <= 0 {
				continue
			}
			td := tokenDoc{Provider: provider, Model: model, TokenType: tt.kind, Tokens: tt.n}
			td.AWS.Timestamp, td.AWS.CloudWatchMetrics = ts, []directive{tokens}
			if err := enc.Encode(&td); err != nil {
				return fmt.Errorf("emf: encode: %w", err)
			}
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
