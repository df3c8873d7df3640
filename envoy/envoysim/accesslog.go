package envoysim

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// The HCM access log (HttpConnectionManager.access_log): envoysim implements the stdout logger
// with a json_format whose every value is exactly one command operator from logOperators, and
// writes one JSON line per stream to Options.AccessLog when the stream ends, as Envoy does
// (ActiveStream::log at stream destruction; the request headers rendered are the HCM's map
// with every filter's mutations). FIDELITY.md lists what each operator renders here.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/observability/access_log/usage
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/advanced/substitution_formatter

const accessLogStdout = "envoy.access_loggers.stdout"

// logOperators are the command operators envoysim renders; any other is refused.
var logOperators = map[string]bool{
	"START_TIME": true, "REQ": true, "REQUEST_HEADER": true, "PROTOCOL": true, "ROUTE_NAME": true,
	"RESPONSE_CODE": true, "RESPONSE_CODE_DETAILS": true, "RESPONSE_FLAGS": true,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT": true, "UPSTREAM_CLUSTER": true, "UPSTREAM_HOST": true,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": true, "BYTES_RECEIVED": true, "BYTES_SENT": true,
	"DURATION": true, "RESPONSE_DURATION": true, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": true,
	"DYNAMIC_METADATA": true,
}

var logOperatorPattern = regexp.MustCompile(`^%([A-Z_]+)(\(([^)]*)\))?(:([0-9]+))?%$`)

// accessLog is one compiled stdout access log.
type accessLog struct {
	fields []logField // sorted by key
}

type logField struct {
	key string
	op  logOperator
}

type logOperator struct {
	name string
	arg  string
	max  int // :Z truncation, 0 = none
}

func compileAccessLogs(logs []*accesslogv3.AccessLog) ([]*accessLog, error) {
	var out []*accessLog
	for i, l := range logs {
		if l.GetName() != accessLogStdout {
			return nil, fmt.Errorf("access_log[%d]: envoysim implements only %s, got %q", i, accessLogStdout, l.GetName())
		}
		msg, err := l.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("access_log[%d]: %w", i, err)
		}
		stdout, ok := msg.(*streamv3.StdoutAccessLog)
		if !ok {
			return nil, fmt.Errorf("access_log[%d]: envoysim implements only StdoutAccessLog, got %T", i, msg)
		}
		format := stdout.GetLogFormat().GetJsonFormat()
		if format == nil {
			return nil, fmt.Errorf("access_log[%d]: envoysim implements only log_format.json_format", i)
		}
		al := &accessLog{}
		for key, v := range format.GetFields() {
			s, ok := v.GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("access_log[%d] field %q: envoysim implements only string values", i, key)
			}
			op, err := parseLogOperator(s.StringValue)
			if err != nil {
				return nil, fmt.Errorf("access_log[%d] field %q: %w", i, key, err)
			}
			al.fields = append(al.fields, logField{key: key, op: op})
		}
		sort.Slice(al.fields, func(a, b int) bool { return al.fields[a].key < al.fields[b].key })
		out = append(out, al)
	}
	return out, nil
}

func parseLogOperator(s string) (logOperator, error) {
	m := logOperatorPattern.FindStringSubmatch(s)
	if m == nil {
		return logOperator{}, fmt.Errorf("%q: envoysim implements a value that is exactly one command operator", s)
	}
	op := logOperator{name: m[1], arg: m[3]}
	if !logOperators[op.name] {
		return logOperator{}, fmt.Errorf("%q: envoysim does not implement command operator %s", s, op.name)
	}
	switch op.name {
	case "REQ", "REQUEST_HEADER", "DYNAMIC_METADATA":
		if op.arg == "" {
			return logOperator{}, fmt.Errorf("%q: %s needs an argument", s, op.name)
		}
	default:
		if m[2] != "" {
			return logOperator{}, fmt.Errorf("%q: envoysim does not implement arguments to %s", s, op.name)
		}
	}
	if m[5] != "" {
		op.max, _ = strconv.Atoi(m[5])
	}
	return op, nil
}

// countingWriter counts the response body bytes written downstream (%BYTES_SENT%).
type countingWriter struct {
	http.ResponseWriter
	n atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer (Flush).
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes read from downstream (%BYTES_RECEIVED%).
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// streamLog is what the access log needs beyond the stream's own state, recorded as the
// stream runs.
type streamLog struct {
	start time.Time
	out   *countingWriter
	in    *countingBody // nil without a request body

	mu            sync.Mutex
	status        int
	cluster, host string
	firstUpstream time.Time
}

func newStreamLog(w http.ResponseWriter, r *http.Request) (*streamLog, http.ResponseWriter) {
	l := &streamLog{start: time.Now(), out: &countingWriter{ResponseWriter: w}}
	if r.Body != nil && r.Body != http.NoBody {
		l.in = &countingBody{ReadCloser: r.Body}
		r.Body = l.in
	}
	return l, l.out
}

// noteStatus records the status of the response headers sent downstream.
func (l *streamLog) noteStatus(code int) {
	l.mu.Lock()
	l.status = code
	l.mu.Unlock()
}

// noteUpstream records the cluster and host of the latest attempt.
func (l *streamLog) noteUpstream(cluster, host string) {
	l.mu.Lock()
	l.cluster, l.host = cluster, host
	l.mu.Unlock()
}

// noteUpstreamResponse records when the first upstream response byte (the headers) arrived.
func (l *streamLog) noteUpstreamResponse() {
	l.mu.Lock()
	if l.firstUpstream.IsZero() {
		l.firstUpstream = time.Now()
	}
	l.mu.Unlock()
}

// writeAccessLogs renders the HCM's access logs for the ended stream s and writes them.
func (s *stream) writeAccessLogs() {
	w := s.sim.opts.AccessLog
	if w == nil || len(s.hcm.accessLogs) == 0 {
		return
	}
	end := time.Now()
	for _, al := range s.hcm.accessLogs {
		line := map[string]any{}
		for _, f := range al.fields {
			line[f.key] = s.renderLogOperator(f.op, end)
		}
		b, err := json.Marshal(line)
		if err != nil {
			s.log.Error("access log", "err", err)
			continue
		}
		s.sim.accessLogMu.Lock()
		_, _ = w.Write(append(b, '\n'))
		s.sim.accessLogMu.Unlock()
	}
}

// renderLogOperator is one operator's typed JSON value; nil renders as null (Envoy's "-").
func (s *stream) renderLogOperator(op logOperator, end time.Time) any {
	l := s.logState
	l.mu.Lock()
	status, cluster, host, firstUpstream := l.status, l.cluster, l.host, l.firstUpstream
	l.mu.Unlock()
	s.mu.Lock()
	lr, rt, aborted := s.main.local, s.route, s.main.aborted
	s.mu.Unlock()
	if p := s.lr.Load(); p != nil {
		// A local reply encoded through the filter chain is its own phase;
		// a second local reply there replaces it.
		s.mu.Lock()
		if p.local != nil {
			lr = p.local
		}
		s.mu.Unlock()
	}
	truncate := func(v string) string {
		if op.max > 0 && len(v) > op.max {
			return v[:op.max]
		}
		return v
	}
	nonEmpty := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	switch op.name {
	case "START_TIME":
		// AccessLogDateTimeFormatter: "%Y-%m-%dT%H:%M:%E3SZ" in UTC.
		return l.start.UTC().Format("2006-01-02T15:04:05.000Z")
	case "REQ", "REQUEST_HEADER":
		for _, name := range strings.SplitN(op.arg, "?", 2) {
			if vs := s.reqH.Values(strings.ToLower(name)); len(vs) > 0 {
				// %REQ()% joins repeated headers with ','.
				return truncate(strings.Join(vs, ","))
			}
		}
		return nil
	case "PROTOCOL":
		if s.r.ProtoMajor == 2 {
			return "HTTP/2"
		}
		return s.r.Proto
	case "ROUTE_NAME":
		if rt == nil {
			return nil
		}
		return nonEmpty(rt.name)
	case "RESPONSE_CODE":
		return status
	case "RESPONSE_CODE_DETAILS":
		switch {
		case lr != nil:
			// Whitespace becomes '_' unless ALLOW_WHITESPACES is given.
			return strings.Map(func(r rune) rune {
				if unicode.IsSpace(r) {
					return '_'
				}
				return r
			}, lr.details)
		case status != 0:
			return "via_upstream"
		}
		return nil
	case "RESPONSE_FLAGS":
		if lr != nil {
			if f := responseFlag(lr.details); f != "" {
				return f
			}
		} else if aborted && status == 0 {
			return "DC"
		}
		return "-"
	case "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return s.info.attempts()
	case "UPSTREAM_CLUSTER":
		return nonEmpty(cluster)
	case "UPSTREAM_HOST":
		return nonEmpty(host)
	case "UPSTREAM_TRANSPORT_FAILURE_REASON":
		return nil
	case "BYTES_RECEIVED":
		if l.in == nil {
			return 0
		}
		return l.in.n.Load()
	case "BYTES_SENT":
		return l.out.n.Load()
	case "DURATION":
		return end.Sub(l.start).Milliseconds()
	case "RESPONSE_DURATION":
		if firstUpstream.IsZero() {
			return nil
		}
		return firstUpstream.Sub(l.start).Milliseconds()
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		h, _, err := net.SplitHostPort(s.r.RemoteAddr)
		if err != nil {
			return nonEmpty(s.r.RemoteAddr)
		}
		return h
	case "DYNAMIC_METADATA":
		return s.dynamicMetadataValue(op)
	}
	return nil
}

// dynamicMetadataValue is %DYNAMIC_METADATA(NAMESPACE:KEY*):Z%: the namespace's struct or the
// value at the nested keys, strings truncated to Z; absent is null.
func (s *stream) dynamicMetadataValue(op logOperator) any {
	path := strings.Split(op.arg, ":")
	s.info.mu.Lock()
	ns, ok := s.info.metadata[path[0]]
	var v *structpb.Value
	if ok {
		v = structpb.NewStructValue(ns)
		for _, k := range path[1:] {
			next, ok := v.GetStructValue().GetFields()[k]
			if !ok {
				v = nil
				break
			}
			v = next
		}
	}
	var raw []byte
	var err error
	if v != nil {
		raw, err = protojson.Marshal(v)
	}
	s.info.mu.Unlock()
	if v == nil || err != nil {
		return nil
	}
	if str, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		if op.max > 0 && len(str.StringValue) > op.max {
			return str.StringValue[:op.max]
		}
		return str.StringValue
	}
	return json.RawMessage(raw)
}

// responseFlag is the %RESPONSE_FLAGS% short name Envoy sets together with the local reply
// whose details envoysim gives: Router::Filter (NoRouteFound, NoClusterFound,
// NoHealthyUpstream, UpstreamRequestTimeout, streamResetReasonToResponseFlag for
// upstream_reset_before_response_started{<reason>}) and ActiveStream::onIdleTimeout
// (StreamIdleTimeout). Other local replies carry no flag here.
// https://github.com/envoyproxy/envoy/blob/v1.37.0/source/common/router/router.cc
func responseFlag(details string) string {
	switch details {
	case "route_not_found":
		return "NR"
	case "cluster_not_found":
		return "NC"
	case "no_healthy_upstream":
		return "UH"
	case "upstream_response_timeout", "upstream_per_try_timeout":
		return "UT"
	case "stream_idle_timeout":
		return "SI"
	}
	if reason, ok := strings.CutPrefix(details, "upstream_reset_before_response_started{"); ok {
		reason = strings.ReplaceAll(strings.TrimSuffix(reason, "}"), "_", " ")
		switch reason {
		case "remote connection failure", "local connection failure", "connection timeout":
			return "UF"
		case "connection termination":
			return "UC"
		case "overflow":
			return "UO"
		case "remote reset", "remote refused stream reset", "connect error":
			return "UR"
		case "local reset", "local refused stream reset":
			return "LR"
		case "protocol error":
			return "UPE"
		}
	}
	return ""
}
