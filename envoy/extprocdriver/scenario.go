package extprocdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// Spec is the JSON form of a scenario file: one HTTP exchange through
// Envoy's ext_proc filters. Unknown fields are errors; file paths in it are
// relative to the scenario file.
type Spec struct {
	// Name labels the reports.
	Name string `json:"name"`
	// Request is the downstream request as the HTTP connection manager hands
	// it to the router-level filter.
	Request RequestSpec `json:"request"`
	// RouterFilter is the ext_proc filter in the listener's HTTP filter
	// chain, before the router.
	RouterFilter FilterSpec `json:"router_filter"`
	// Route is what Envoy's router changes in the request headers after the
	// router-level filter and before the upstream filters (the route's
	// request_headers_to_add and request_headers_to_remove).
	Route *RouteSpec `json:"route,omitempty"`
	// UpstreamFilter, when present, is an ext_proc filter in the cluster's
	// upstream HTTP filter chain: a second stream per exchange, opened after
	// the router-level filter is done with the request.
	UpstreamFilter *FilterSpec `json:"upstream_filter,omitempty"`
	// HostRewrite is the :authority Envoy writes when the upstream
	// connection is ready (auto_host_rewrite): after the upstream filters
	// have seen the request headers, as in Envoy 1.40.
	HostRewrite string `json:"host_rewrite,omitempty"`
	// Response is the upstream's response.
	Response ResponseSpec `json:"response"`
	// Expect lists the checks every exchange must pass.
	Expect Expectations `json:"expect"`
}

// RequestSpec is the downstream request.
type RequestSpec struct {
	// Capture is a recorded request, {"method", "path", "headers": {...}},
	// whose values are the defaults of the fields below. Header names are
	// lower-cased, hop-by-hop headers dropped and Host becomes :authority,
	// as Envoy presents them; content-length is recomputed from the body.
	Capture string `json:"capture,omitempty"`
	// Method is :method; default the capture's, else POST.
	Method string `json:"method,omitempty"`
	// Path is :path; default the capture's. Required one way or the other.
	Path string `json:"path,omitempty"`
	// Authority is :authority; default the capture's Host, else localhost.
	Authority string `json:"authority,omitempty"`
	// Scheme is :scheme; default http.
	Scheme string `json:"scheme,omitempty"`
	// Headers are added to the captured headers, replacing a captured value.
	Headers map[string]string `json:"headers,omitempty"`
	// RemoveHeaders are dropped from the captured headers.
	RemoveHeaders []string `json:"remove_headers,omitempty"`
	// BodyFile (or Body, inline) is the request body.
	BodyFile string `json:"body_file,omitempty"`
	Body     string `json:"body,omitempty"`
	// BodyJSONSet overwrites or adds top-level fields of a JSON body, keeping
	// the order and bytes of the others (e.g. {"stream": false}).
	BodyJSONSet map[string]json.RawMessage `json:"body_json_set,omitempty"`
	// Chunks is how many nearly equal pieces a STREAMED request body is sent
	// in; default 1.
	Chunks int `json:"chunks,omitempty"`
}

// FilterSpec is one ext_proc filter's configuration, in the names of
// Envoy's ExternalProcessor, plus the values Envoy would give its
// attributes (the driver does not evaluate attribute expressions).
type FilterSpec struct {
	// ProcessingMode is Envoy's ProcessingMode in its proto JSON form,
	// e.g. {"request_body_mode": "BUFFERED"}; required. The driver plays the
	// body modes NONE, BUFFERED and STREAMED and trailer mode SKIP.
	ProcessingMode json.RawMessage `json:"processing_mode"`
	// AllowModeOverride is the filter's allow_mode_override.
	AllowModeOverride bool `json:"allow_mode_override,omitempty"`
	// MutationRules is Envoy's HeaderMutationRules in proto JSON; absent
	// means Envoy's defaults.
	MutationRules json.RawMessage `json:"mutation_rules,omitempty"`
	// GRPCInitialMetadata is the gRPC service's initial_metadata, sent with
	// every stream of the filter.
	GRPCInitialMetadata map[string]string `json:"grpc_initial_metadata,omitempty"`
	// RequestAttributes are the values of the filter's request_attributes,
	// keyed by expression; sent with the first request-direction message.
	RequestAttributes map[string]any `json:"request_attributes,omitempty"`
	// ResponseAttributes are the values of its response_attributes; sent
	// with the first response-direction message.
	ResponseAttributes map[string]any `json:"response_attributes,omitempty"`
}

// RouteSpec is a route's request header changes: removals, then sets.
type RouteSpec struct {
	SetHeaders    map[string]string `json:"set_headers,omitempty"`
	RemoveHeaders []string          `json:"remove_headers,omitempty"`
}

// ResponseSpec is the upstream's response.
type ResponseSpec struct {
	// Status is :status; default 200.
	Status int `json:"status,omitempty"`
	// Headers are the response headers besides :status.
	Headers map[string]string `json:"headers,omitempty"`
	// BodyFile (or Body, inline) is the response body.
	BodyFile string `json:"body_file,omitempty"`
	Body     string `json:"body,omitempty"`
	// Chunks is how many nearly equal pieces a STREAMED body arrives in
	// (default 1); ChunkOffsets gives the cut points instead.
	Chunks       int   `json:"chunks,omitempty"`
	ChunkOffsets []int `json:"chunk_offsets,omitempty"`
}

// Expectations are checked on every exchange.
type Expectations struct {
	// RoutedRequest is the request after the router-level filter: what
	// Envoy routes on.
	RoutedRequest *MessageExpect `json:"routed_request,omitempty"`
	// UpstreamRequest is the request as it leaves Envoy: after the route's
	// header changes, the upstream filter and the host rewrite.
	UpstreamRequest *MessageExpect `json:"upstream_request,omitempty"`
	// DownstreamResponse is the response as it reaches the client: every
	// (possibly mutated) body chunk concatenated.
	DownstreamResponse *MessageExpect `json:"downstream_response,omitempty"`
}

// MessageExpect is a set of checks on one HTTP message. Header names are
// matched lower-case; JSON keys are the body's top-level keys.
type MessageExpect struct {
	HeaderEquals    map[string]string `json:"header_equals,omitempty"`
	HeadersPresent  []string          `json:"headers_present,omitempty"`
	HeadersAbsent   []string          `json:"headers_absent,omitempty"`
	BodyEqualsFile  string            `json:"body_equals_file,omitempty"`
	BodyContains    []string          `json:"body_contains,omitempty"`
	BodyNotContains []string          `json:"body_not_contains,omitempty"`
	JSONKeysPresent []string          `json:"json_keys_present,omitempty"`
	JSONKeysAbsent  []string          `json:"json_keys_absent,omitempty"`
}

// Scenario is a loaded Spec with every file read and every default
// resolved. It is read-only, so any number of exchanges may run it at once.
type Scenario struct {
	name        string
	reqHeaders  *extprocrules.HeaderMap
	reqBody     []byte
	reqChunks   int
	router      *filterConfig
	route       RouteSpec
	upstream    *filterConfig
	hostRewrite string
	respHeaders *extprocrules.HeaderMap
	respBody    []byte
	respChunks  [][]byte
	expect      [numPoints]*messageCheck
}

// Name is the scenario's label.
func (s *Scenario) Name() string { return s.name }

// filterConfig is a compiled FilterSpec.
type filterConfig struct {
	mode              *extprocv3.ProcessingMode
	allowModeOverride bool
	rules             extprocrules.MutationRules
	metadata          metadata.MD
	requestAttrs      *structpb.Struct // nil: none configured
	responseAttrs     *structpb.Struct
}

// hopByHop are the connection headers Envoy's codecs consume and never hand
// to filters (RFC 9110 section 7.6.1).
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}

// Load reads and compiles a scenario file.
func Load(path string) (*Scenario, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec Spec
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, err := Compile(&spec, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Compile resolves spec; relative file paths in it are taken from dir.
func Compile(spec *Spec, dir string) (*Scenario, error) {
	file := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	s := &Scenario{name: spec.Name, hostRewrite: spec.HostRewrite}
	var err error
	if s.reqHeaders, s.reqBody, err = compileRequest(&spec.Request, file); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	s.reqChunks = max(spec.Request.Chunks, 1)
	if s.router, err = compileFilter(&spec.RouterFilter); err != nil {
		return nil, fmt.Errorf("router_filter: %w", err)
	}
	if spec.Route != nil {
		s.route = *spec.Route
	}
	if spec.UpstreamFilter != nil {
		if s.upstream, err = compileFilter(spec.UpstreamFilter); err != nil {
			return nil, fmt.Errorf("upstream_filter: %w", err)
		}
		if s.upstream.mode.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE {
			// The response body would pass the upstream filter and then the
			// router-level one chunk by chunk; no scenario needs that yet.
			return nil, errors.New("upstream_filter: the driver plays an upstream filter's response body only in mode NONE")
		}
	}
	rs := &spec.Response
	s.respHeaders = &extprocrules.HeaderMap{}
	s.respHeaders.Add(":status", fmt.Sprint(orDefault(rs.Status, 200)))
	for _, k := range sortedKeys(rs.Headers) {
		s.respHeaders.Set(strings.ToLower(k), rs.Headers[k])
	}
	if s.respBody, err = readBody(file(rs.BodyFile), rs.Body); err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	if s.respChunks, err = split(s.respBody, rs.Chunks, rs.ChunkOffsets); err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	for p, e := range map[point]*MessageExpect{routedRequest: spec.Expect.RoutedRequest, upstreamRequest: spec.Expect.UpstreamRequest, downstreamResponse: spec.Expect.DownstreamResponse} {
		if e == nil {
			continue
		}
		if s.expect[p], err = compileCheck(e, file); err != nil {
			return nil, fmt.Errorf("expect.%s: %w", p, err)
		}
	}
	return s, nil
}

// capture is the format of a recorded request.
type capture struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

func compileRequest(rq *RequestSpec, file func(string) string) (*extprocrules.HeaderMap, []byte, error) {
	var c capture
	if rq.Capture != "" {
		raw, err := os.ReadFile(file(rq.Capture))
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, nil, fmt.Errorf("capture: %w", err)
		}
	}
	path := firstOf(rq.Path, c.Path)
	if path == "" {
		return nil, nil, errors.New("path is required (or a capture with one)")
	}
	authority := rq.Authority
	var regular [][2]string
	for _, k := range sortedKeys(c.Headers) {
		name := strings.ToLower(k)
		switch {
		case name == "host":
			authority = firstOf(authority, c.Headers[k])
		case name == "content-length" || slices.Contains(hopByHop, name):
		default:
			regular = append(regular, [2]string{name, c.Headers[k]})
		}
	}
	// Pseudo-headers first, in the order Envoy's HTTP/1 codec produces them.
	h := &extprocrules.HeaderMap{}
	h.Add(":authority", firstOf(authority, "localhost"))
	h.Add(":path", path)
	h.Add(":method", firstOf(rq.Method, c.Method, "POST"))
	h.Add(":scheme", firstOf(rq.Scheme, "http"))
	for _, kv := range regular {
		h.Add(kv[0], kv[1])
	}
	for _, k := range rq.RemoveHeaders {
		h.Remove(strings.ToLower(k))
	}
	for _, k := range sortedKeys(rq.Headers) {
		h.Set(strings.ToLower(k), rq.Headers[k])
	}
	body, err := readBody(file(rq.BodyFile), rq.Body)
	if err != nil {
		return nil, nil, err
	}
	if len(rq.BodyJSONSet) > 0 {
		if body, err = setTopLevel(body, rq.BodyJSONSet); err != nil {
			return nil, nil, fmt.Errorf("body_json_set: %w", err)
		}
	}
	if len(body) > 0 {
		h.Set("content-length", fmt.Sprint(len(body)))
	}
	return h, body, nil
}

func compileFilter(f *FilterSpec) (*filterConfig, error) {
	if len(f.ProcessingMode) == 0 {
		return nil, errors.New("processing_mode is required")
	}
	c := &filterConfig{mode: &extprocv3.ProcessingMode{}, allowModeOverride: f.AllowModeOverride}
	if err := protojson.Unmarshal(f.ProcessingMode, c.mode); err != nil {
		return nil, fmt.Errorf("processing_mode: %w", err)
	}
	if err := checkModePlayable(c.mode); err != nil {
		return nil, fmt.Errorf("processing_mode: %w", err)
	}
	if len(f.MutationRules) > 0 {
		var r mutationrulesv3.HeaderMutationRules
		if err := protojson.Unmarshal(f.MutationRules, &r); err != nil {
			return nil, fmt.Errorf("mutation_rules: %w", err)
		}
		c.rules = extprocrules.NewMutationRules(&r)
	}
	if len(f.GRPCInitialMetadata) > 0 {
		c.metadata = metadata.New(f.GRPCInitialMetadata)
	}
	var err error
	if len(f.RequestAttributes) > 0 {
		if c.requestAttrs, err = structpb.NewStruct(f.RequestAttributes); err != nil {
			return nil, fmt.Errorf("request_attributes: %w", err)
		}
	}
	if len(f.ResponseAttributes) > 0 {
		if c.responseAttrs, err = structpb.NewStruct(f.ResponseAttributes); err != nil {
			return nil, fmt.Errorf("response_attributes: %w", err)
		}
	}
	return c, nil
}

// checkModePlayable accepts the modes whose message sequence the driver
// plays: one reply per message. BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED and
// GRPC bodies and SEND trailers are refused rather than played wrong.
func checkModePlayable(m *extprocv3.ProcessingMode) error {
	for _, bm := range []extprocv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
		switch bm {
		case extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_BUFFERED, extprocv3.ProcessingMode_STREAMED:
		default:
			return fmt.Errorf("body mode %s is not played by the driver", bm)
		}
	}
	for _, tm := range []extprocv3.ProcessingMode_HeaderSendMode{m.GetRequestTrailerMode(), m.GetResponseTrailerMode()} {
		if tm == extprocv3.ProcessingMode_SEND {
			return errors.New("trailer mode SEND is not played by the driver")
		}
	}
	return nil
}

func readBody(file, inline string) ([]byte, error) {
	switch {
	case file != "" && inline != "":
		return nil, errors.New("body_file and body are exclusive")
	case file != "":
		return os.ReadFile(file)
	default:
		return []byte(inline), nil
	}
}

// split cuts body at offsets, or else into n nearly equal pieces.
func split(body []byte, n int, offsets []int) ([][]byte, error) {
	if len(body) == 0 {
		return nil, nil
	}
	if len(offsets) > 0 {
		var out [][]byte
		prev := 0
		for _, off := range offsets {
			if off <= prev || off >= len(body) {
				return nil, fmt.Errorf("chunk_offsets %v: want increasing offsets inside (0, %d)", offsets, len(body))
			}
			out = append(out, body[prev:off])
			prev = off
		}
		return append(out, body[prev:]), nil
	}
	n = min(max(n, 1), len(body))
	out := make([][]byte, n)
	for i := range n {
		out[i] = body[i*len(body)/n : (i+1)*len(body)/n]
	}
	return out, nil
}

// setTopLevel overwrites or appends top-level fields of a JSON object, the
// other members keeping their order and bytes.
func setTopLevel(body []byte, fields map[string]json.RawMessage) ([]byte, error) {
	type member struct {
		key   string
		value json.RawMessage
	}
	var members []member
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("the body is not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		members = append(members, member{tok.(string), v})
	}
	var out bytes.Buffer
	out.WriteByte('{')
	seen := map[string]bool{}
	write := func(k string, v json.RawMessage) {
		if out.Len() > 1 {
			out.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		out.Write(kb)
		out.WriteByte(':')
		out.Write(v)
	}
	for _, m := range members {
		v := m.value
		if nv, ok := fields[m.key]; ok {
			v, seen[m.key] = nv, true
		}
		write(m.key, v)
	}
	for _, k := range sortedKeys(fields) {
		if !seen[k] {
			write(k, fields[k])
		}
	}
	out.WriteByte('}')
	if !json.Valid(out.Bytes()) {
		return nil, errors.New("the result is not valid JSON")
	}
	return out.Bytes(), nil
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
