package envoysim

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	upstreamcodecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// This file emulates a cluster's upstream HTTP filter chain
// (HttpProtocolOptions.http_filters; source/common/router/upstream_request.cc,
// Envoy 1.37–1.40): the filters ccproxy uses there are ext_proc, header_mutation
// and the terminal upstream_codec. The chain is instantiated per upstream
// attempt (one UpstreamRequest per attempt, retries included) and works on
// the router's shared downstream header map and StreamInfo, so a later
// attempt sees an earlier attempt's mutations and dynamic metadata.

const (
	filterHeaderMutation = "envoy.filters.http.header_mutation"
	filterUpstreamCodec  = "envoy.filters.http.upstream_codec"
	// Key of the request attributes in ProcessingRequest.attributes
	// (ext_proc.cc FilterName).
	extProcAttributesKey = extprocrules.AttributesKey
)

// upstreamFilterConfig is one compiled upstream HTTP filter; exactly one of
// the fields is set (the codec is implicit: it must be last).
type upstreamFilterConfig struct {
	extProc        *extProcConfig
	headerMutation *headerMutationConfig
}

// compileUpstreamFilters compiles HttpProtocolOptions.http_filters. The
// codec must be the last filter and only the last (ClusterInfoImpl in
// source/common/upstream/upstream_impl.cc: "The codec filter is the only
// valid terminal upstream HTTP filter"; a terminal filter elsewhere fails
// FilterChainUtility::checkTerminalFilter).
func compileUpstreamFilters(filters []*hcmv3.HttpFilter) ([]upstreamFilterConfig, error) {
	if len(filters) == 0 {
		return nil, nil
	}
	var out []upstreamFilterConfig
	for i, f := range filters {
		if f.GetTypedConfig() == nil {
			return nil, fmt.Errorf("upstream http filter %q: envoysim needs typed_config", f.GetName())
		}
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("upstream http filter %q: %w", f.GetName(), err)
		}
		last := i == len(filters)-1
		switch v := msg.(type) {
		case *upstreamcodecv3.UpstreamCodec:
			if !last {
				// Http::FilterChainUtility::checkTerminalFilter.
				return nil, fmt.Errorf("terminal filter named %s of type %s must be the last filter in a upstream http filter chain", f.GetName(), filterUpstreamCodec)
			}
		case *extprocv3.ExternalProcessor:
			ep, err := compileExtProc(f.GetName(), v)
			if err != nil {
				return nil, fmt.Errorf("upstream http filter %q: %w", f.GetName(), err)
			}
			ep.upstream = true
			if ep.requestAttrs, err = compileAttributes(v.GetRequestAttributes()); err != nil {
				return nil, fmt.Errorf("upstream http filter %q: %w", f.GetName(), err)
			}
			if len(v.GetResponseAttributes()) > 0 {
				return nil, fmt.Errorf("upstream http filter %q: envoysim implements response_attributes only on the router-level ext_proc filter", f.GetName())
			}
			for _, m := range []extprocv3.ProcessingMode_BodySendMode{ep.mode.GetRequestBodyMode(), ep.mode.GetResponseBodyMode()} {
				if m != extprocv3.ProcessingMode_NONE {
					return nil, fmt.Errorf("upstream http filter %q: envoysim implements body mode NONE only in an upstream filter chain, got %s", f.GetName(), m)
				}
			}
			if ep.allowModeOverride {
				return nil, fmt.Errorf("upstream http filter %q: envoysim does not implement allow_mode_override in an upstream filter chain", f.GetName())
			}
			out = append(out, upstreamFilterConfig{extProc: ep})
		case *headermutationv3.HeaderMutation:
			hm, err := compileHeaderMutationFilter(v)
			if err != nil {
				return nil, fmt.Errorf("upstream http filter %q: %w", f.GetName(), err)
			}
			out = append(out, upstreamFilterConfig{headerMutation: hm})
		default:
			return nil, fmt.Errorf("upstream http filter %q: envoysim implements only %s, %s and %s in an upstream filter chain, not %T",
				f.GetName(), filterExtProc, filterHeaderMutation, filterUpstreamCodec, msg)
		}
		if last {
			if _, ok := msg.(*upstreamcodecv3.UpstreamCodec); !ok {
				// ClusterInfoImpl (source/common/upstream/upstream_impl.cc).
				return nil, errors.New("the codec filter is the only valid terminal upstream HTTP filter, use 'envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec'")
			}
		}
	}
	return out, nil
}

// ---- request_attributes and response_attributes ----

// attrExpr is a CEL attribute of one of the only forms envoysim evaluates:
// xds.upstream_host_metadata.filter_metadata['ns']['key'] (request_attributes
// of an upstream filter) or upstream.request_attempt_count
// (response_attributes of the router-level filter).
type attrExpr struct {
	text         string
	ns, key      string
	attemptCount bool
}

// attemptCountAttr is the CEL attribute upstream.request_attempt_count:
// StreamInfo::attemptCount().value_or(0) as a CEL uint
// (source/extensions/filters/common/expr/context.cc, UpstreamLookupValues).
const attemptCountAttr = "upstream.request_attempt_count"

// compileResponseAttributes compiles the router-level filter's
// response_attributes: only upstream.request_attempt_count is implemented.
func compileResponseAttributes(exprs []string) ([]attrExpr, error) {
	var out []attrExpr
	for _, e := range exprs {
		if e != attemptCountAttr {
			return nil, fmt.Errorf("response_attributes: envoysim evaluates only %s, not %q", attemptCountAttr, e)
		}
		// ExpressionManager::initExpressions skips duplicates.
		if len(out) == 0 {
			out = append(out, attrExpr{text: e, attemptCount: true})
		}
	}
	return out, nil
}

var hostMetadataAttr = regexp.MustCompile(`^xds\.upstream_host_metadata\.filter_metadata\['([^'\\]+)'\]\['([^'\\]+)'\]$`)

func compileAttributes(exprs []string) ([]attrExpr, error) {
	var out []attrExpr
	seen := map[string]bool{}
	for _, e := range exprs {
		m := hostMetadataAttr.FindStringSubmatch(e)
		if m == nil {
			return nil, fmt.Errorf("request_attributes: envoysim evaluates only xds.upstream_host_metadata.filter_metadata['ns']['key'], not %q", e)
		}
		// ExpressionManager::initExpressions skips duplicates.
		if seen[e] {
			continue
		}
		seen[e] = true
		out = append(out, attrExpr{text: e, ns: m[1], key: m[2]})
	}
	return out, nil
}

// evaluateAttributes is ExpressionManager::evaluateAttributes
// (source/extensions/filters/http/ext_proc/matching_utils.cc, Envoy 1.40):
// an expression that evaluates to an error (a missing map key) is skipped;
// bool stays bool, a CEL int or uint (upstream.request_attempt_count) becomes
// a number_value, everything else — a Struct number included, which CEL sees
// as a double — is printed as a string. The Struct is sent even when empty.
// h is the attempt's host (upstream filters), attempts the router's attempt
// count so far (StreamInfo::attemptCount, 0 when unset).
func evaluateAttributes(exprs []attrExpr, h *hostConfig, attempts uint32) *structpb.Struct {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, e := range exprs {
		if e.attemptCount {
			// case CelValue::Type::kUint64: value.set_number_value(...).
			out.Fields[e.text] = structpb.NewNumberValue(float64(attempts))
			continue
		}
		if h == nil {
			continue
		}
		ns, ok := h.metadata.GetFilterMetadata()[e.ns]
		if !ok {
			continue
		}
		v, ok := ns.GetFields()[e.key]
		if !ok {
			continue
		}
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			out.Fields[e.text] = structpb.NewStringValue(k.StringValue)
		case *structpb.Value_BoolValue:
			out.Fields[e.text] = structpb.NewBoolValue(k.BoolValue)
		case *structpb.Value_NumberValue:
			// A Struct number is a CEL double, printed by Expr::print.
			out.Fields[e.text] = structpb.NewStringValue(strconv.FormatFloat(k.NumberValue, 'g', -1, 64))
		default:
			// Lists, maps and null: CEL print output is not emulated.
			continue
		}
	}
	return out
}

// ---- header_mutation ----

type headerMutationConfig struct {
	ops []headerMutationOp
}

type headerMutationOp struct {
	remove    string
	add       *headerAdd
	formatter []formatPart
}

// formatPart is a literal or a %DYNAMIC_METADATA(ns:key[:key...])% command.
type formatPart struct {
	literal string
	ns      string
	path    []string
}

func compileHeaderMutationFilter(hm *headermutationv3.HeaderMutation) (*headerMutationConfig, error) {
	out := &headerMutationConfig{}
	for _, m := range hm.GetMutations().GetRequestMutations() {
		switch a := m.GetAction().(type) {
		case *mutationrulesv3.HeaderMutation_Remove:
			out.ops = append(out.ops, headerMutationOp{remove: strings.ToLower(a.Remove)})
		case *mutationrulesv3.HeaderMutation_Append:
			op, err := compileHeaderAppend(a.Append)
			if err != nil {
				return nil, err
			}
			out.ops = append(out.ops, op)
		default:
			return nil, fmt.Errorf("envoysim does not implement header mutation action %T", a)
		}
	}
	return out, nil
}

// compileHeaderAppend follows Router::HeadersToAddEntry
// (source/common/router/header_parser.cc, Envoy 1.40), which
// Http::HeaderMutations (source/common/http/header_mutation.cc) reuses.
func compileHeaderAppend(o *corev3.HeaderValueOption) (headerMutationOp, error) {
	key := strings.ToLower(o.GetHeader().GetKey())
	if strings.HasPrefix(key, ":") || key == "host" {
		return headerMutationOp{}, fmt.Errorf("header %q: :-prefixed or host headers may not be modified", key)
	}
	if len(o.GetHeader().GetRawValue()) > 0 {
		return headerMutationOp{}, fmt.Errorf("header %q: envoysim reads the formatter from value (raw_value is not implemented here)", key)
	}
	action := o.GetAppendAction()
	//lint:ignore SA1019 HeadersToAddEntry still honours the deprecated append field when it is set.
	if a := o.GetAppend(); a != nil {
		if action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return headerMutationOp{}, errors.New("both append and append_action are set and it's not allowed")
		}
		if a.GetValue() {
			action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		} else {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
	}
	parts, err := parseFormatter(o.GetHeader().GetValue())
	if err != nil {
		return headerMutationOp{}, fmt.Errorf("header %q: %w", key, err)
	}
	return headerMutationOp{add: &headerAdd{key: key, action: action, keepEmpty: o.GetKeepEmptyValue()}, formatter: parts}, nil
}

var dynamicMetadataCmd = regexp.MustCompile(`^DYNAMIC_METADATA\(([^:()]+)((?::[^:()]+)+)\)$`)

// parseFormatter accepts literal text and %DYNAMIC_METADATA(ns:key)%
// commands; any other substitution command is a config error.
func parseFormatter(s string) ([]formatPart, error) {
	var parts []formatPart
	for s != "" {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			parts = append(parts, formatPart{literal: s})
			break
		}
		if i > 0 {
			parts = append(parts, formatPart{literal: s[:i]})
		}
		rest := s[i+1:]
		j := strings.IndexByte(rest, '%')
		if j < 0 {
			return nil, fmt.Errorf("unterminated %% command in %q", s)
		}
		cmd := rest[:j]
		m := dynamicMetadataCmd.FindStringSubmatch(cmd)
		if m == nil {
			return nil, fmt.Errorf("envoysim implements only the %%DYNAMIC_METADATA(ns:key)%% formatter, not %%%s%%", cmd)
		}
		parts = append(parts, formatPart{ns: m[1], path: strings.Split(m[2][1:], ":")})
		s = rest[j+1:]
	}
	return parts, nil
}

// format renders the value with omit_empty_values (HeadersToAddEntry builds
// its formatter with omit_empty_values=true): a missing metadata value is
// the empty string, not "-".
func format(parts []formatPart, si *streamInfo) string {
	var b strings.Builder
	for _, p := range parts {
		if p.ns == "" {
			b.WriteString(p.literal)
			continue
		}
		b.WriteString(si.metadataString(p.ns, p.path))
	}
	return b.String()
}

// metadataString is the DYNAMIC_METADATA formatter's value: a string as is,
// anything else as JSON; missing → "".
func (si *streamInfo) metadataString(ns string, path []string) string {
	si.mu.Lock()
	defer si.mu.Unlock()
	st := si.metadata[ns]
	if st == nil {
		return ""
	}
	var v *structpb.Value
	cur := st
	for i, k := range path {
		fv, ok := cur.GetFields()[k]
		if !ok {
			return ""
		}
		if i == len(path)-1 {
			v = fv
			break
		}
		cur = fv.GetStructValue()
		if cur == nil {
			return ""
		}
	}
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return s.StringValue
	}
	if _, ok := v.GetKind().(*structpb.Value_NullValue); ok || v.GetKind() == nil {
		return ""
	}
	data, err := protojson.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

// apply is Http::HeaderMutations::evaluateHeaders: in order; an append whose
// value formats empty is skipped unless keep_empty_value.
func (c *headerMutationConfig) apply(h *headerMap, si *streamInfo) {
	for _, op := range c.ops {
		if op.add == nil {
			h.Remove(op.remove)
			continue
		}
		a := *op.add
		a.value = format(op.formatter, si)
		headerMutations{add: []headerAdd{a}}.apply(h)
	}
}

// ---- runtime ----

// upstreamChain is the upstream filter chain of one attempt.
type upstreamChain struct {
	cfg     []upstreamFilterConfig
	filters []*extProcFilter // per cfg entry; nil for header_mutation
}

func newUpstreamChain(s *stream, cfg []upstreamFilterConfig, host *hostConfig, attemptCtx context.Context) *upstreamChain {
	c := &upstreamChain{cfg: cfg, filters: make([]*extProcFilter, len(cfg))}
	for i, fc := range cfg {
		if fc.extProc != nil {
			f := newExtProcFilter(fc.extProc, s)
			f.host = host
			f.attemptCtx = attemptCtx
			c.filters[i] = f
		}
	}
	return c
}

// decodeHeaders runs the request headers through the chain in order. It
// returns false when the attempt must stop: the attempt context ended (per
// try or route timeout, downstream abort), or a filter asked for a local
// reply (RuleLocalReply: the stream's local reply, which ends the attempt;
// RuleStall: ignored, so the attempt stalls here until it ends, as in Envoy
// 1.35 and older).
func (c *upstreamChain) decodeHeaders(s *stream, h *headerMap, noBody bool, attemptCtx context.Context) bool {
	for i, fc := range c.cfg {
		if fc.headerMutation != nil {
			fc.headerMutation.apply(h, s.info)
			continue
		}
		f := c.filters[i]
		if !f.headers(f.dec, h, noBody) || !f.waitIfStalled(attemptCtx) {
			return false
		}
	}
	return true
}

// encodeHeaders runs the response headers through the chain in reverse
// order (header_mutation has no response mutations here).
func (c *upstreamChain) encodeHeaders(s *stream, h *headerMap, noBody bool, attemptCtx context.Context) bool {
	for i := len(c.cfg) - 1; i >= 0; i-- {
		f := c.filters[i]
		if f == nil {
			continue
		}
		if !f.headers(f.enc, h, noBody) || !f.waitIfStalled(attemptCtx) {
			return false
		}
	}
	return true
}

// requestBody returns a CONTINUE_AND_REPLACE replacement of the request
// body, if any filter made one (the last one wins).
func (c *upstreamChain) requestBody() ([]byte, bool) {
	var data []byte
	replaced := false
	for _, f := range c.filters {
		if f == nil {
			continue
		}
		f.mu.Lock()
		if f.dec.bodyReplaced {
			data, replaced = f.dec.replacement, true
		}
		f.mu.Unlock()
	}
	return data, replaced
}

// responseBody wraps the response body for CONTINUE_AND_REPLACE on the
// response headers, in encoding order.
func (c *upstreamChain) responseBody(body bodySource, noBody bool) bodySource {
	for i := len(c.filters) - 1; i >= 0; i-- {
		f := c.filters[i]
		if f == nil {
			continue
		}
		f.mu.Lock()
		replaced, repl := f.enc.bodyReplaced, f.enc.replacement
		f.mu.Unlock()
		if replaced {
			body = &replacedBody{inner: body, data: repl, noBody: noBody}
		}
	}
	return body
}

func (c *upstreamChain) destroy() {
	if c == nil {
		return
	}
	for _, f := range c.filters {
		if f != nil {
			f.destroy()
		}
	}
}
