package envoysim

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/dataplane"
)

// Envoy commits the conformance rows cite (envoyproxy/envoy; the release
// commits are on its main branch).
const (
	envoy137 = "6d9bb7d9a85d616b220d1f8fe67b61f82bbdb8d3" // v1.37.0
	// envoyMain is main three days before v1.39.0 ("1.39.0-dev").
	envoyMain = "6806efb84e9fb7ee40b675a5804e41cadd472987"
	// PR #41231 "ext_proc: allow immediate response from upstream filter".
	envoyUpstreamImmediate = "c628f8a3999e3b45713a6fee6877a685dda7d748"
	// envoyBefore41231 is a main-branch commit from before #41231 (its
	// sendImmediateResponse still ignores upstream filters).
	envoyBefore41231 = "0026fb37ac23a204dd789ea695ef98857effd7ea"
	// PR #41769 "ext_proc: re-enable sending local replies to the ext_proc server".
	envoyLocalReplyExtProc = "37efb748cff8c7505e405e2ab94d50baaca30959"
)

// conformanceRow is one Envoy behaviour ccproxy relies on.
type conformanceRow struct {
	behaviour string
	// source is the Envoy file(s) it follows and the commit or release they
	// were read at ("path @ commit|vX.Y.Z; …").
	source string
	// rules the row runs under: both rules where they differ.
	rules []UpstreamFailureRule
	run   func(t *testing.T, rule UpstreamFailureRule)
}

var (
	bothRules   = []UpstreamFailureRule{RuleLocalReply, RuleStall}
	defaultRule = []UpstreamFailureRule{RuleLocalReply}
	// sourceRef is "path @ 40-hex commit or vX.Y.Z", one or more, ";"-separated.
	sourceRef = regexp.MustCompile(`^[\w./-]+\.(cc|h|proto|md|yaml) @ ([0-9a-f]{40}|v1\.\d+\.\d+)( \([^)]*\))?(; [\w./-]+\.(cc|h|proto|md|yaml) @ ([0-9a-f]{40}|v1\.\d+\.\d+)( \([^)]*\))?)*$`)
)

// TestEnvoyConformance pins every Envoy behaviour ccproxy relies on, one
// row each with the Envoy source it follows; rows whose outcome depends on
// the upstream failure rule run under both rules. FIDELITY.md lists the rows.
func TestEnvoyConformance(t *testing.T) {
	t.Parallel()
	rows := []conformanceRow{
		{
			behaviour: "upstream ext_proc ImmediateResponse",
			source:    "source/extensions/filters/http/ext_proc/ext_proc.cc @ " + envoyUpstreamImmediate + " (sendImmediateResponse); source/common/router/upstream_request.cc @ " + envoy137 + " (UpstreamFilterManager::sendLocalReply)",
			rules:     bothRules,
			run:       upstreamFailureRow(immediateReply),
		},
		{
			behaviour: "upstream ext_proc gRPC error",
			source:    "source/extensions/filters/http/ext_proc/ext_proc.cc @ " + envoy137 + " (onGrpcError: status_on_error, ext_proc_error_gRPC_error_<code>{msg})",
			rules:     bothRules,
			run:       upstreamFailureRow(grpcErrorReply),
		},
		{
			behaviour: "upstream ext_proc message timeout",
			source:    "source/extensions/filters/http/ext_proc/ext_proc.cc @ " + envoy137 + " (onMessageTimeout: 504, ext_proc_error_per-message_timeout_exceeded)",
			rules:     bothRules,
			run:       upstreamFailureRow(noReply),
		},
		{
			behaviour: "router-level processor rewrites an upstream-chain local reply",
			source:    "source/common/http/filter_manager.cc @ " + envoyLocalReplyExtProc + " (sendLocalReplyViaFilterChain; ext_proc onLocalReply removed, first in v1.37.0)",
			rules:     bothRules,
			run:       testRouterRewritesLocalReply,
		},
		{
			behaviour: "a local reply the router-level processor answers with ImmediateResponse is sent directly",
			source:    "source/common/http/filter_manager.cc @ " + envoy137 + " (DownstreamFilterManager::sendLocalReply → sendDirectLocalReply); source/extensions/filters/http/ext_proc/ext_proc.cc @ " + envoy137 + " (processing_complete_)",
			rules:     defaultRule,
			run:       testImmediateResponseToLocalReply,
		},
		{
			behaviour: "an ImmediateResponse the router-level processor sends while its attempt is in the upstream filter chain ends the request at once",
			source:    "source/extensions/filters/http/ext_proc/ext_proc.cc @ " + envoyBefore41231 + " (onReceiveMessage: kImmediateResponse taken in any processing state; the same case in a main-branch version after #41231); source/common/http/filter_manager.cc @ " + envoy137 + " (sendLocalReply before response headers; the router's attempts reset on destroy)",
			rules:     bothRules,
			run:       testUnsolicitedImmediateResponse,
		},
		{
			behaviour: "no host in any priority: 503 no healthy upstream, not retried, seen by the router-level processor",
			source:    "source/common/router/router.cc @ " + envoy137 + " (sendNoHealthyUpstreamResponse; attempt_count_ set before host selection); source/common/upstream/cluster_manager_impl.cc @ " + envoy137 + " (upstream_cx_none_healthy)",
			rules:     bothRules,
			run:       testNoHealthyUpstream,
		},
		{
			behaviour: "STRICT_DNS priority 0 without an address: the first attempt goes to priority 1",
			source:    "source/extensions/clusters/strict_dns/strict_dns_cluster.cc @ " + envoy137 + "; source/extensions/load_balancing_policies/common/load_balancer_impl.cc @ " + envoy137 + " (recalculatePerPriorityState)",
			rules:     defaultRule,
			run:       testPlanDoesNotResolve,
		},
		{
			behaviour: "STRICT_DNS re-resolution: a failed lookup keeps the hosts, no such name removes them",
			source:    "source/extensions/clusters/strict_dns/strict_dns_cluster.cc @ " + envoy137 + " (startResolve: update_failure); source/extensions/network/dns_resolver/cares/dns_impl.cc @ " + envoyMain + " (ENODATA/ENOTFOUND are a completed empty answer)",
			rules:     defaultRule,
			run:       testDNSRefresh,
		},
		{
			behaviour: "Plan 429 retried once to priority 1 (previous_priorities), attempt count 2",
			source:    "source/extensions/retry/priority/previous_priorities/previous_priorities.cc @ " + envoy137 + "; source/common/router/retry_state_impl.cc @ " + envoy137 + " (retriable-status-codes)",
			rules:     defaultRule,
			run:       testPlan429FallsBack,
		},
		{
			behaviour: "request body over the retry buffer limit: retries off, retry_or_shadow_abandoned",
			source:    "source/common/router/router.cc @ " + envoy137 + " (decodeData, calculateEffectiveBufferLimit); source/common/router/config_impl.cc @ " + envoy137 + " (getRequestBodyBufferLimit)",
			rules:     defaultRule,
			run:       testRetryBufferOverflow,
		},
		{
			behaviour: "request body outgrows the retry buffer during a retry back-off: 507",
			source:    "source/common/router/router.cc @ " + envoy137 + " (decodeData: no upstream request → InsufficientStorage)",
			rules:     defaultRule,
			run:       testRetryBufferOverflowDuringBackoff,
		},
		{
			behaviour: "stream_idle_timeout, route idle_timeout and request_timeout before response headers: 504 once the request is complete, else 408",
			source:    "source/common/http/conn_manager_impl.cc @ " + envoy137 + " (onIdleTimeout, onRequestTimeout, refreshIdleAndFlushTimeouts); source/common/http/utility.cc @ " + envoy137 + " (maybeRequestTimeoutCode)",
			rules:     defaultRule,
			run:       testStreamIdleTimeoutCode,
		},
		{
			behaviour: "per_try_timeout starts at pool ready once the request is complete, not when the body was sent",
			source:    "source/common/router/upstream_request.cc @ " + envoy137 + " (onPoolReady → setupPerTryTimeout); source/common/router/router.cc @ " + envoy137 + " (onRequestComplete)",
			rules:     defaultRule,
			run:       testPerTryFromPoolReady,
		},
		{
			behaviour: "prefix, path and safe_regex route matchers ignore the query string",
			source:    "source/common/common/matchers.cc @ " + envoy137 + " (PathMatcher::match: removeQueryAndFragment); source/common/router/config_impl.cc @ " + envoy137 + " (PrefixRouteEntryImpl::matches)",
			rules:     defaultRule,
			run:       testPathMatchIgnoresQuery,
		},
		{
			behaviour: "header matchers match each value of a repeated header",
			source:    "source/common/http/header_utility.h @ " + envoyMain + " (matchesHeadersIndividually; guard match_headers_individually, default true since v1.39.0)",
			rules:     defaultRule,
			run:       testRepeatedHeaderMatch,
		},
		{
			behaviour: "reset reply body without the transport failure reason, which stays in the details",
			source:    "source/common/router/router.cc @ " + envoyMain + " (onUpstreamReset; guard hide_transport_failure_reason_in_response_body, since v1.39.0)",
			rules:     defaultRule,
			run:       testResetBodyHidesTransportFailure,
		},
		{
			behaviour: "edge requests lose x-envoy-original-path and x-envoy-original-host",
			source:    "source/common/http/conn_manager_utility.cc @ " + envoyMain + " (cleanInternalHeaders)",
			rules:     defaultRule,
			run:       testEdgeDropsOriginalPath,
		},
	}
	for _, row := range rows {
		if !sourceRef.MatchString(row.source) {
			t.Errorf("%s: source %q does not name a file @ a commit or release", row.behaviour, row.source)
		}
		for _, rule := range row.rules {
			t.Run(row.behaviour+"/"+rule.String(), func(t *testing.T) {
				t.Parallel()
				row.run(t, rule)
			})
		}
	}
}

// ---- the production configuration, with fake Plan, Bedrock and processors ----

const (
	planName    = "plan.test"
	bedrockName = "bedrock.test"
	rigRegion   = "us-east-1"
)

// rig runs controlplane.BuildResources' production resources in envoysim:
// Plan at plan.test (priority 0) and Bedrock at bedrock.test (priority 1)
// of the plan+bedrock cluster, both reached through Options.Dial; one
// sidecar serves the router-level processor (router) and the upstream one
// (up), told apart by the upstream filter's initial metadata.
type rig struct {
	rule       UpstreamFailureRule
	planStatus int
	router     *goodProcessor
	up         *upProc
	// nxdomain lists names that do not resolve.
	nxdomain []string
	perTry   time.Duration
	// upstreamMessageTimeout replaces the upstream ext_proc's
	// message_timeout when set.
	upstreamMessageTimeout time.Duration

	sim           *Sim
	url           string
	plan, bedrock *backend
	replies       localReplyLog
	resolveMu     sync.Mutex
	resolveErr    map[string]error
}

func (r *rig) start(t *testing.T) {
	t.Helper()
	if r.planStatus == 0 {
		r.planStatus = 200
	}
	if r.router == nil {
		r.router = &goodProcessor{}
	}
	if r.up == nil {
		r.up = &upProc{}
	}
	route := controlplane.FallbackClusterName(rigRegion)
	r.router.onReqBody = func([]byte) *extprocsvc.CommonResponse {
		return common(&extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader(dataplane.RouteHeader, route)}}, true)
	}
	r.plan = startBackend(t, r.planStatus, `{"from":"plan"}`)
	r.bedrock = startBackend(t, 200, `{"from":"bedrock"}`)
	p := startProcessor(t, func(srv extprocsvc.ExternalProcessor_ProcessServer) error {
		md, _ := metadata.FromIncomingContext(srv.Context())
		if v := md.Get(dataplane.FilterHeader); len(v) == 1 && v[0] == dataplane.FilterUpstream {
			return r.up.handle(srv)
		}
		return r.router.handle(srv)
	})
	planPort := r.plan.addr()[strings.LastIndex(r.plan.addr(), ":")+1:]
	bedrockPort := r.bedrock.addr()[strings.LastIndex(r.bedrock.addr(), ":")+1:]
	opts := controlplane.Options{
		ListenAddress: freePort(t), ExtProcAddress: p.addr,
		AnthropicURL: "http://" + planName + ":" + planPort, BedrockURL: "http://" + bedrockName + ":" + bedrockPort,
		BedrockRegions: []string{rigRegion}, PerTryTimeout: r.perTry,
	}
	built, err := controlplane.BuildResources(opts)
	if err != nil {
		t.Fatal(err)
	}
	var res []types.Resource
	for _, c := range built.Clusters {
		if r.upstreamMessageTimeout > 0 {
			setUpstreamMessageTimeout(t, c, r.upstreamMessageTimeout)
		}
		res = append(res, c)
	}
	for _, c := range built.Routes {
		res = append(res, c)
	}
	for _, l := range built.Listeners {
		res = append(res, l)
	}
	dialMap := map[string]string{
		planName + ":" + planPort:       r.plan.addr(),
		bedrockName + ":" + bedrockPort: r.bedrock.addr(),
	}
	r.resolveErr = map[string]error{}
	for _, n := range r.nxdomain {
		r.resolveErr[n] = &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
	}
	r.sim, r.url = startSimOpts(t, Options{
		Resources:           res,
		UpstreamFailureRule: r.rule,
		localReplies:        r.replies.record,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := dialMap[addr]; ok {
				addr = to
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		Resolve: r.resolve,
	})
}

func (r *rig) resolve(_ context.Context, host string) ([]netip.Addr, error) {
	r.resolveMu.Lock()
	defer r.resolveMu.Unlock()
	if err := r.resolveErr[host]; err != nil {
		return nil, err
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// setResolveErr changes what resolving host answers (nil: an address).
func (r *rig) setResolveErr(host string, err error) {
	r.resolveMu.Lock()
	defer r.resolveMu.Unlock()
	r.resolveErr[host] = err
}

// send posts a Messages request through the gateway.
func (r *rig) send(t *testing.T) result {
	t.Helper()
	return do(t, "POST", r.url+"/v1/messages", `{"model":"claude"}`, map[string]string{"content-type": "application/json"})
}

// fallbackCluster is the runtime of the plan+bedrock cluster.
func (r *rig) fallbackCluster() *upstreamCluster {
	return r.sim.snap.Load().upstreams[controlplane.FallbackClusterName(rigRegion)]
}

func (r *rig) stat(name string) uint64 {
	return r.sim.Stats()["cluster."+controlplane.FallbackClusterName(rigRegion)+"."+name]
}

// setUpstreamMessageTimeout sets the message_timeout of a cluster's
// upstream ext_proc filter.
func setUpstreamMessageTimeout(t *testing.T, c types.Resource, d time.Duration) {
	cl, ok := c.(*clusterv3.Cluster)
	if !ok {
		return
	}
	a := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if a == nil {
		return
	}
	hpo := &upstreamhttpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(hpo); err != nil {
		t.Fatal(err)
	}
	for _, f := range hpo.GetHttpFilters() {
		ep := &extprocv3.ExternalProcessor{}
		if f.GetTypedConfig().UnmarshalTo(ep) != nil {
			continue
		}
		ep.MessageTimeout = durationpb.New(d)
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, ep)}
	}
	cl.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = mustAny(t, hpo)
}

// responseMessages lists what the router-level processor was sent in the
// response direction: response_headers:<status>[+ct=<content-type>][+cl=<content-length>][+eos]
// and response_body:<body>, with the attempt count attribute of the first.
func responseMessages(reqs []*extprocsvc.ProcessingRequest) (msgs []string, attempts []float64) {
	for _, r := range reqs {
		switch {
		case r.GetResponseHeaders() != nil:
			h := r.GetResponseHeaders().GetHeaders()
			m := "response_headers:" + headerValue(h, ":status")
			if ct := headerValue(h, "content-type"); ct != "" {
				m += "+ct=" + ct
			}
			if cl := headerValue(h, "content-length"); cl != "" {
				m += "+cl=" + cl
			}
			if r.GetResponseHeaders().GetEndOfStream() {
				m += "+eos"
			}
			msgs = append(msgs, m)
		case r.GetResponseBody() != nil:
			msgs = append(msgs, "response_body:"+string(r.GetResponseBody().GetBody()))
		default:
			continue
		}
		if a := r.GetAttributes()[extProcAttributesKey]; a != nil {
			attempts = append(attempts, a.GetFields()[dataplane.AttemptCount].GetNumberValue())
		}
	}
	return msgs, attempts
}

// ---- rows ----

// upstreamReply is how the upstream processor fails Plan's attempt.
type upstreamReply int

const (
	immediateReply upstreamReply = iota
	grpcErrorReply
	noReply
)

// upstreamFailureRow: the upstream processor fails Plan's attempt on its
// request headers. 1.36+ (RuleLocalReply): a local reply at once — the
// ImmediateResponse, status_on_error 500 or 504 — not retried although the
// route retries resets on Bedrock, and (1.37+) offered to the router-level
// processor. ≤1.35 (RuleStall): ignored, the attempt stalls until
// per_try_timeout, which the route retries on Bedrock.
func upstreamFailureRow(how upstreamReply) func(*testing.T, UpstreamFailureRule) {
	return func(t *testing.T, rule UpstreamFailureRule) {
		r := &rig{rule: rule, perTry: 300 * time.Millisecond}
		if how == noReply {
			r.upstreamMessageTimeout = 50 * time.Millisecond
		}
		r.up = &upProc{reply: func(stream int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
			if stream > 0 {
				return continueResp(req), nil
			}
			switch how {
			case immediateReply:
				return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
					Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}, Body: []byte("denied"), Details: "plan refused",
				}}}, nil
			case grpcErrorReply:
				return nil, status.Error(codes.Internal, "boom")
			}
			return nil, nil
		}}
		r.start(t)
		got := r.send(t)
		msgs, attempts := responseMessages(r.router.seen())
		if rule == RuleStall {
			// Stalled to per_try_timeout, then Bedrock answers the retry.
			if got.err != nil || got.status != 200 || got.body != `{"from":"bedrock"}` {
				t.Fatalf("got %d %q err=%v, want Bedrock's 200", got.status, got.body, got.err)
			}
			if n := r.sim.sendImmediateRespUpstreamIgnored.Load(); n != 1 {
				t.Errorf("send_immediate_resp_upstream_ignored = %d, want 1", n)
			}
			if n := r.stat(statRetry); n != 1 {
				t.Errorf("upstream_rq_retry = %d, want 1", n)
			}
			if n := len(r.bedrock.seen()); n != 1 {
				t.Errorf("Bedrock saw %d requests, want 1", n)
			}
			if want := []string{"response_headers:200+ct=application/json+cl=18", `response_body:{"from":"bedrock"}`}; strings.Join(msgs, " ") != strings.Join(want, " ") || len(attempts) != 1 || attempts[0] != 2 {
				t.Errorf("router processor saw %q attempts %v, want %q attempts [2]", msgs, attempts, want)
			}
			return
		}
		var wantStatus int
		var wantBody, wantDetails string
		var wantMsgs []string
		switch how {
		case immediateReply:
			wantStatus, wantBody, wantDetails = 503, "denied", "plan_refused"
			wantMsgs = []string{"response_headers:503+ct=text/plain+cl=6", "response_body:denied"}
		case grpcErrorReply:
			wantStatus, wantDetails = 500, "ext_proc_error_gRPC_error_13{boom}"
			wantMsgs = []string{"response_headers:500+eos"}
		case noReply:
			wantStatus, wantDetails = 504, "ext_proc_error_per-message_timeout_exceeded"
			wantMsgs = []string{"response_headers:504+eos"}
		}
		if got.err != nil || got.status != wantStatus || got.body != wantBody {
			t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, wantStatus, wantBody)
		}
		if ct := got.header.Get("content-type"); (wantBody == "") != (ct == "") {
			t.Errorf("content-type %q with body %q", ct, wantBody)
		}
		if d := r.replies.details(); len(d) != 1 || d[0] != wantDetails {
			t.Errorf("local replies %q, want one with details %q", d, wantDetails)
		}
		// Not retried: one upstream processor stream, nothing reached a backend.
		if n := len(r.up.seen()); n != 1 {
			t.Errorf("upstream processor saw %d streams, want 1", n)
		}
		if p, b := len(r.plan.seen()), len(r.bedrock.seen()); p != 0 || b != 0 {
			t.Errorf("Plan saw %d, Bedrock %d requests, want none", p, b)
		}
		if n := r.stat(statRetry); n != 0 {
			t.Errorf("upstream_rq_retry = %d, want 0", n)
		}
		// 1.37+: the router-level processor sees the local reply, attempt count 1.
		if strings.Join(msgs, " ") != strings.Join(wantMsgs, " ") || len(attempts) != 1 || attempts[0] != 1 {
			t.Errorf("router processor saw %q attempts %v, want %q attempts [1]", msgs, attempts, wantMsgs)
		}
	}
}

// anthropicOverloaded is what a router processor may turn an Envoy failure
// into.
const anthropicOverloaded = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`

// testRouterRewritesLocalReply: the upstream processor times out (no retry
// configured), and the router-level processor rewrites the 504 into an
// Anthropic error with CONTINUE_AND_REPLACE — which only works when local
// replies reach it (1.37+).
func testRouterRewritesLocalReply(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, perTry: 300 * time.Millisecond, upstreamMessageTimeout: 50 * time.Millisecond}
	r.up = &upProc{reply: func(stream int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		if stream > 0 {
			return continueResp(req), nil
		}
		return nil, nil
	}}
	r.router = &goodProcessor{onResp: func(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if rh := req.GetResponseHeaders(); rh != nil && headerValue(rh.GetHeaders(), ":status") == "504" {
			return respHeadersResp(&extprocsvc.CommonResponse{
				Status: extprocsvc.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setHeader(":status", "529"), setHeader("content-type", "application/json"),
				}},
				BodyMutation: &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: []byte(anthropicOverloaded)}},
			})
		}
		return nil
	}}
	r.start(t)
	got := r.send(t)
	msgs, _ := responseMessages(r.router.seen())
	if rule == RuleStall {
		// ≤1.36: the processor never sees local replies; the stalled attempt
		// is retried on Bedrock after per_try_timeout.
		if got.err != nil || got.status != 200 || got.body != `{"from":"bedrock"}` {
			t.Fatalf("got %d %q err=%v, want Bedrock's 200", got.status, got.body, got.err)
		}
		for _, m := range msgs {
			if strings.HasPrefix(m, "response_headers:504") {
				t.Errorf("router processor saw a local reply: %q", msgs)
			}
		}
		return
	}
	if got.err != nil || got.status != 529 || got.body != anthropicOverloaded || got.header.Get("content-type") != "application/json" {
		t.Fatalf("got %d %q (content-type %q) err=%v, want 529 %q", got.status, got.body, got.header.Get("content-type"), got.err, anthropicOverloaded)
	}
	if want := "response_headers:504+eos"; strings.Join(msgs, " ") != want {
		t.Errorf("router processor saw %q, want %q", msgs, want)
	}
}

// testUnsolicitedImmediateResponse: the upstream processor holds Plan's
// attempt (no reply, its message timeout far away), and the router-level
// processor, awaiting nothing, sends an ImmediateResponse on its own stream:
// the client gets it at once under both rules — before the message timeout
// (1.37+: an empty 504) or the per-try timeout (≤1.35: a retry on Bedrock)
// could answer — nothing is retried, no backend is reached, and the
// processor is not shown its own reply. ccproxy's router-level processor
// answers a failed upstream attempt this way.
func testUnsolicitedImmediateResponse(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, perTry: 5 * time.Second, upstreamMessageTimeout: 5 * time.Second}
	inFlight := make(chan struct{}, 1)
	r.up = &upProc{reply: func(stream int, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		if stream > 0 || req.GetRequestHeaders() == nil {
			return continueResp(req), nil
		}
		inFlight <- struct{}{}
		return nil, nil // the attempt waits for a reply that never comes
	}}
	r.router = &goodProcessor{unsolicited: make(chan *extprocsvc.ProcessingResponse, 1)}
	go func() {
		<-inFlight
		r.router.unsolicited <- &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_GatewayTimeout},
			Headers: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}},
			Body:    []byte(`{"type":"error","error":{"type":"timeout_error","message":"gateway"}}`),
			Details: "ccproxy_upstream_processor_failed",
		}}}
	}()
	r.start(t)
	got := r.send(t)
	if got.err != nil || got.status != 504 || got.body != `{"type":"error","error":{"type":"timeout_error","message":"gateway"}}` || got.header.Get("content-type") != "application/json" {
		t.Fatalf("got %d %q (content-type %q) err=%v, want the processor's 504", got.status, got.body, got.header.Get("content-type"), got.err)
	}
	if d := r.replies.details(); len(d) != 1 || d[0] != "ccproxy_upstream_processor_failed" {
		t.Errorf("local replies %q, want only the processor's", d)
	}
	if p, b := len(r.plan.seen()), len(r.bedrock.seen()); p != 0 || b != 0 {
		t.Errorf("Plan saw %d, Bedrock %d requests, want none", p, b)
	}
	if n := r.stat(statRetry); n != 0 {
		t.Errorf("upstream_rq_retry = %d, want 0", n)
	}
	if msgs, _ := responseMessages(r.router.seen()); len(msgs) != 0 {
		t.Errorf("router processor was shown %q after its own reply", msgs)
	}
}

// testImmediateResponseToLocalReply: the router-level processor answers a
// local reply's response headers with an ImmediateResponse; that reply is
// sent directly (response headers exist → sendDirectLocalReply) and is not
// offered to the processor again (it is processing_complete_).
func testImmediateResponseToLocalReply(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, perTry: 5 * time.Second}
	r.up = &upProc{reply: func(int, *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error) {
		return nil, status.Error(codes.Unavailable, "sidecar restarting")
	}}
	r.router = &goodProcessor{onResp: func(req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetResponseHeaders() == nil {
			return nil
		}
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: 529},
			Headers: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}},
			Body:    []byte(anthropicOverloaded),
			Details: "ccproxy envoy failure",
		}}}
	}}
	r.start(t)
	got := r.send(t)
	if got.err != nil || got.status != 529 || got.body != anthropicOverloaded || got.header.Get("content-type") != "application/json" {
		t.Fatalf("got %d %q (content-type %q) err=%v, want 529 %q", got.status, got.body, got.header.Get("content-type"), got.err, anthropicOverloaded)
	}
	msgs, attempts := responseMessages(r.router.seen())
	if want := "response_headers:500+eos"; strings.Join(msgs, " ") != want || len(attempts) != 1 || attempts[0] != 1 {
		t.Errorf("router processor saw %q attempts %v, want %q attempts [1]", msgs, attempts, want)
	}
	if want := []string{"500 ext_proc_error_gRPC_error_14{sidecar_restarting}", "529 ccproxy_envoy_failure"}; strings.Join(r.replies.replies(), ",") != strings.Join(want, ",") {
		t.Errorf("local replies %q, want %q", r.replies.replies(), want)
	}
}

// testNoHealthyUpstream: neither name resolves, so no priority has a host:
// the router's 503 no healthy upstream, not retried, with attempt count 1;
// 1.37+ offer it to the router-level processor (headers and, BUFFERED, the
// body).
func testNoHealthyUpstream(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, nxdomain: []string{planName, bedrockName}}
	r.start(t)
	got := r.send(t)
	if got.err != nil || got.status != 503 || got.body != "no healthy upstream" || got.header.Get("content-type") != "text/plain" {
		t.Fatalf("got %d %q (content-type %q) err=%v, want 503 no healthy upstream", got.status, got.body, got.header.Get("content-type"), got.err)
	}
	if d := r.replies.details(); len(d) != 1 || d[0] != "no_healthy_upstream" {
		t.Errorf("local replies %q, want one no_healthy_upstream", d)
	}
	if n := r.stat(statNoneHealthy); n != 1 {
		t.Errorf("upstream_cx_none_healthy = %d, want 1 (not retried)", n)
	}
	if n := len(r.up.seen()); n != 0 {
		t.Errorf("upstream processor saw %d streams, want none", n)
	}
	msgs, attempts := responseMessages(r.router.seen())
	if rule == RuleStall {
		if len(msgs) != 0 {
			t.Errorf("router processor saw %q; ≤1.36 skip local replies", msgs)
		}
		return
	}
	if want := "response_headers:503+ct=text/plain+cl=19 response_body:no healthy upstream"; strings.Join(msgs, " ") != want || len(attempts) != 1 || attempts[0] != 1 {
		t.Errorf("router processor saw %q attempts %v, want %q attempts [1]", msgs, attempts, want)
	}
}

// testPlanDoesNotResolve: Plan's name has no address, so priority 0 has no
// host and its load is 0%: the first attempt (attempt count 1) goes to
// Bedrock, without a retry.
func testPlanDoesNotResolve(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, nxdomain: []string{planName}}
	r.start(t)
	got := r.send(t)
	if got.err != nil || got.status != 200 || got.body != `{"from":"bedrock"}` {
		t.Fatalf("got %d %q err=%v, want Bedrock's 200", got.status, got.body, got.err)
	}
	if p, b := len(r.plan.seen()), len(r.bedrock.seen()); p != 0 || b != 1 {
		t.Errorf("Plan saw %d, Bedrock %d requests, want 0 and 1", p, b)
	}
	streams := r.up.seen()
	if len(streams) != 1 || streams[0].reqs[0].GetAttributes()[extProcAttributesKey].GetFields()[attrBackend].GetStringValue() != "bedrock" {
		t.Fatalf("upstream processor streams %d, want 1 for backend bedrock", len(streams))
	}
	if n := r.stat(statRetry); n != 0 {
		t.Errorf("upstream_rq_retry = %d, want 0", n)
	}
	if _, attempts := responseMessages(r.router.seen()); len(attempts) != 1 || attempts[0] != 1 {
		t.Errorf("router processor attempt counts %v, want [1]", attempts)
	}
}

// testDNSRefresh: Plan resolved at start; a later lookup that fails (not
// "no such name") keeps its host and counts update_failure; "no such name"
// removes it and the next request goes to Bedrock.
func testDNSRefresh(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule}
	r.start(t)
	uc := r.fallbackCluster()
	resolveAgain := func() {
		uc.resolveDNS(context.Background(), r.resolve, func() { r.sim.incCluster(uc.cfg.name, statUpdateFailure) })
	}
	for _, step := range []struct {
		err      error
		wantBody string
		failures uint64
	}{
		{nil, `{"from":"plan"}`, 0},
		{&net.DNSError{Err: "server misbehaving", Name: planName, IsTemporary: true}, `{"from":"plan"}`, 1},
		{&net.DNSError{Err: "no such host", Name: planName, IsNotFound: true}, `{"from":"bedrock"}`, 1},
		{nil, `{"from":"plan"}`, 1},
	} {
		r.setResolveErr(planName, step.err)
		resolveAgain()
		got := r.send(t)
		if got.err != nil || got.status != 200 || got.body != step.wantBody {
			t.Fatalf("after resolving %s with %v: got %d %q err=%v, want %q", planName, step.err, got.status, got.body, got.err, step.wantBody)
		}
		if n := r.stat(statUpdateFailure); n != step.failures {
			t.Errorf("after %v: update_failure = %d, want %d", step.err, n, step.failures)
		}
	}
}

// testPlan429FallsBack: the fallback route retries a Plan 429 once, on the
// priority-1 Bedrock host; the router-level processor sees attempt count 2.
func testPlan429FallsBack(t *testing.T, rule UpstreamFailureRule) {
	r := &rig{rule: rule, planStatus: 429}
	r.start(t)
	got := r.send(t)
	if got.err != nil || got.status != 200 || got.body != `{"from":"bedrock"}` {
		t.Fatalf("got %d %q err=%v, want Bedrock's 200", got.status, got.body, got.err)
	}
	if n := r.stat(statRetry); n != 1 {
		t.Errorf("upstream_rq_retry = %d, want 1", n)
	}
	if _, attempts := responseMessages(r.router.seen()); len(attempts) != 1 || attempts[0] != 2 {
		t.Errorf("router processor attempt counts %v, want [2]", attempts)
	}
}

// testRetryBufferOverflow: the retry policy retries 5xx once and the first
// attempt answers 503. With the body within the effective retry buffer
// limit the request is retried; over it, retries are off for the request
// (the 503 is the answer) and retry_or_shadow_abandoned counts it. The
// effective limit follows the 1.37+ precedence.
func testRetryBufferOverflow(t *testing.T, _ UpstreamFailureRule) {
	const body = "0123456789012345678901234567890123456789" // 40 bytes
	u32 := wrapperspb.UInt32
	u64 := wrapperspb.UInt64
	for _, tt := range []struct {
		name      string
		listener  uint32
		route     func(*routev3.Route)
		vhost     func(*routev3.VirtualHost)
		wantRetry bool
	}{
		{name: "listener limit", listener: 32},
		{name: "listener limit, body fits", listener: 64, wantRetry: true},
		{name: "route request_body_buffer_limit over a smaller listener limit", listener: 32,
			route: func(r *routev3.Route) { r.RequestBodyBufferLimit = u64(64) }, wantRetry: true},
		{name: "route request_body_buffer_limit under the listener limit", listener: 1 << 20,
			route: func(r *routev3.Route) { r.RequestBodyBufferLimit = u64(32) }},
		{name: "route request_body_buffer_limit before the virtual host's", listener: 32,
			route: func(r *routev3.Route) { r.RequestBodyBufferLimit = u64(64) },
			vhost: func(v *routev3.VirtualHost) { v.RequestBodyBufferLimit = u64(16) }, wantRetry: true},
		{name: "virtual host request_body_buffer_limit before the route's legacy limit", listener: 32,
			//lint:ignore SA1019 the deprecated limit's precedence is under test.
			route: func(r *routev3.Route) { r.PerRequestBufferLimitBytes = u32(16) },
			vhost: func(v *routev3.VirtualHost) { v.RequestBodyBufferLimit = u64(64) }, wantRetry: true},
		{name: "route legacy limit before the virtual host's", listener: 1 << 20,
			//lint:ignore SA1019 the deprecated limit's precedence is under test.
			route: func(r *routev3.Route) { r.PerRequestBufferLimitBytes = u32(16) },
			//lint:ignore SA1019 the deprecated limit's precedence is under test.
			vhost: func(v *routev3.VirtualHost) { v.PerRequestBufferLimitBytes = u32(64) }},
		{name: "virtual host legacy limit", listener: 1 << 20,
			//lint:ignore SA1019 the deprecated limit's precedence is under test.
			vhost: func(v *routev3.VirtualHost) { v.PerRequestBufferLimitBytes = u32(16) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tries atomic.Int32
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if tries.Add(1) == 1 {
					w.WriteHeader(503)
					return
				}
				_, _ = io.WriteString(w, "second")
			})
			c := cfg{noExtProc: true, backendAddr: up.addr(),
				listener: func(l *listenerv3.Listener) { l.PerConnectionBufferLimitBytes = u32(tt.listener) },
				planRoute: func(r *routev3.Route) {
					r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: u32(1)}
					if tt.route != nil {
						tt.route(r)
					}
				},
			}
			if tt.vhost != nil {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { tt.vhost(h.GetRouteConfig().GetVirtualHosts()[0]) }
			}
			sim, url := startSimOpts(t, Options{Resources: c.resources(t)})
			got := do(t, "POST", url+"/", body, nil)
			wantStatus, wantBody, wantTries, wantAbandoned := 503, "", int32(1), uint64(1)
			if tt.wantRetry {
				wantStatus, wantBody, wantTries, wantAbandoned = 200, "second", 2, 0
			}
			if got.err != nil || got.status != wantStatus || got.body != wantBody {
				t.Fatalf("got %d %q err=%v, want %d %q", got.status, got.body, got.err, wantStatus, wantBody)
			}
			if n := tries.Load(); n != wantTries {
				t.Errorf("upstream saw %d attempts, want %d", n, wantTries)
			}
			if n := sim.Stats()["cluster.backend."+statRetryOrShadowAbandoned]; n != wantAbandoned {
				t.Errorf("retry_or_shadow_abandoned = %d, want %d", n, wantAbandoned)
			}
		})
	}
}

// testRetryBufferOverflowDuringBackoff: the first attempt fails before the
// request body is complete; while the retry waits for its back-off, the rest
// of the body overflows the retry buffer: no upstream request exists, so the
// answer is a local 507.
func testRetryBufferOverflowDuringBackoff(t *testing.T, _ UpstreamFailureRule) {
	answered := make(chan struct{})
	var once sync.Once
	var tries atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		// Answer at once, before the request body is complete.
		w.Header().Set("connection", "close")
		w.WriteHeader(503)
		once.Do(func() { close(answered) })
	}))
	t.Cleanup(up.Close)
	c := cfg{noExtProc: true, backendAddr: up.Listener.Addr().String(),
		planRoute: func(r *routev3.Route) {
			r.RequestBodyBufferLimit = wrapperspb.UInt64(16)
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1),
				// A back-off long enough that the rest of the body arrives during it.
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Hour), MaxInterval: durationpb.New(time.Hour)}}
		},
	}
	var replies localReplyLog
	sim, url := startSimOpts(t, Options{Resources: c.resources(t), localReplies: replies.record})
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", url+"/", pr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = pw.Write([]byte("0123456789"))
		select {
		case <-answered:
		case <-time.After(30 * time.Second):
		}
		// Give the router the retry decision before the rest arrives: the
		// attempt's 503 reaches it right after the upstream wrote it.
		for i := 0; i < 3000 && sim.Stats()["cluster.backend."+statRetry] == 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		_, _ = pw.Write([]byte("0123456789"))
		_ = pw.Close()
	}()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 507 || string(b) != "exceeded request buffer limit while retrying upstream" {
		t.Fatalf("got %d %q, want 507", resp.StatusCode, b)
	}
	if d := replies.details(); len(d) != 1 || d[0] != "request_payload_exceeded_retry_buffer_limit" {
		t.Errorf("local replies %q", d)
	}
	if n := sim.Stats()["cluster.backend."+statRetryOrShadowAbandoned]; n != 1 {
		t.Errorf("retry_or_shadow_abandoned = %d, want 1", n)
	}
	if n := tries.Load(); n != 1 {
		t.Errorf("upstream saw %d attempts, want 1", n)
	}
}

// testStreamIdleTimeoutCode: the upstream never answers; the stream idle
// timer fires before response headers. The request was received in full →
// 504; its body is still incomplete → 408.
func testStreamIdleTimeoutCode(t *testing.T, _ UpstreamFailureRule) {
	for _, tt := range []struct {
		name       string
		complete   bool
		conf       func(*cfg)
		wantStatus int
		wantBody   string
	}{
		{name: "request complete", complete: true, wantStatus: 504, wantBody: "stream timeout"},
		{name: "request body incomplete", wantStatus: 408, wantBody: "stream timeout"},
		{
			// ActiveStream::refreshIdleAndFlushTimeouts: once the route is
			// resolved its idle_timeout replaces stream_idle_timeout.
			name: "route idle_timeout replaces stream_idle_timeout", complete: true, wantStatus: 504, wantBody: "stream timeout",
			conf: func(c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(time.Hour) }
				c.planRoute = func(r *routev3.Route) { r.GetRoute().IdleTimeout = durationpb.New(200 * time.Millisecond) }
			},
		},
		{
			// ActiveStream::onRequestTimeout, the same rule.
			name: "request_timeout, request body incomplete", wantStatus: 408, wantBody: "request timeout",
			conf: func(c *cfg) {
				c.hcm = func(h *hcmv3.HttpConnectionManager) {
					h.StreamIdleTimeout = durationpb.New(time.Hour)
					h.RequestTimeout = durationpb.New(200 * time.Millisecond)
				}
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			c := cfg{noExtProc: true, backendAddr: up.addr(),
				hcm: func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(200 * time.Millisecond) },
			}
			if tt.conf != nil {
				tt.conf(&c)
			}
			url := startSim(t, c.resources(t), nil)
			pr, pw := io.Pipe()
			t.Cleanup(func() { _ = pw.Close() })
			req, err := http.NewRequest("POST", url+"/", pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = 20
			go func() {
				_, _ = pw.Write([]byte("0123456789"))
				if tt.complete {
					_, _ = pw.Write([]byte("0123456789"))
					_ = pw.Close()
				}
			}()
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || string(b) != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// testPerTryFromPoolReady: the whole request is received, the upstream
// accepts the connection but never reads the 16 MiB body nor answers. The
// per-try timer runs from pool ready, so the attempt ends with 504 although
// the body was never fully sent upstream.
func testPerTryFromPoolReady(t *testing.T, _ UpstreamFailureRule) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accepted, never read
			mu.Unlock()
		}
	}()
	c := cfg{noExtProc: true, backendAddr: ln.Addr().String(),
		listener: func(l *listenerv3.Listener) { l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(32 << 20) },
		planRoute: func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure", PerTryTimeout: durationpb.New(300 * time.Millisecond)}
		},
	}
	url := startSim(t, c.resources(t), nil)
	got := do(t, "POST", url+"/", strings.Repeat("x", 16<<20), nil)
	if got.err != nil || got.status != 504 || got.body != "upstream request timeout" {
		t.Fatalf("got %d %q err=%v, want 504 upstream request timeout", got.status, got.body, got.err)
	}
}

// testPathMatchIgnoresQuery: a prefix is matched against :path without its
// query, like path and safe_regex.
func testPathMatchIgnoresQuery(t *testing.T, _ UpstreamFailureRule) {
	for _, tt := range []struct {
		name       string
		match      *routev3.RouteMatch
		wantStatus int
	}{
		{"prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/v1/messages"}}, 200},
		{"prefix into the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/v1/messages?beta"}}, 404},
		{"path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/v1/messages"}}, 200},
		{"safe_regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v1/[a-z]+"}}}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t, nil)
			c := cfg{noExtProc: true, backendAddr: up.addr(), planRoute: func(r *routev3.Route) { r.Match = tt.match }}
			url := startSim(t, c.resources(t), nil)
			if got := do(t, "GET", url+"/v1/messages?beta=true", "", nil); got.err != nil || got.status != tt.wantStatus {
				t.Fatalf("got %d err=%v, want %d", got.status, got.err, tt.wantStatus)
			}
		})
	}
}

// testRepeatedHeaderMatch: a route matching x-m exactly "b" takes a request
// with x-m: a and x-m: b (1.39+; before, "a,b" did not match).
func testRepeatedHeaderMatch(t *testing.T, _ UpstreamFailureRule) {
	up := startUpstream(t, nil)
	c := cfg{noExtProc: true, backendAddr: up.addr(),
		planRoute: func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x-m", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "b"}}}}}
		},
	}
	url := startSim(t, c.resources(t), nil)
	for _, tt := range []struct {
		values     []string
		wantStatus int
	}{
		{[]string{"a", "b"}, 200},
		{[]string{"a", "c"}, 404},
		{nil, 404},
	} {
		req, err := http.NewRequest("GET", url+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["X-M"] = tt.values
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("x-m %q: status %d, want %d", tt.values, resp.StatusCode, tt.wantStatus)
		}
	}
}

// testResetBodyHidesTransportFailure: a refused connection answers 503 with
// the reset reason only; the transport failure reason is in the details.
func testResetBodyHidesTransportFailure(t *testing.T, _ UpstreamFailureRule) {
	c := cfg{noExtProc: true, backendAddr: "127.0.0.1:1"}
	var replies localReplyLog
	_, url := startSimOpts(t, Options{Resources: c.resources(t), localReplies: replies.record})
	got := do(t, "GET", url+"/", "", nil)
	const want = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
	if got.err != nil || got.status != 503 || got.body != want {
		t.Fatalf("got %d %q err=%v, want 503 %q", got.status, got.body, got.err, want)
	}
	wantDetails := "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
	if d := replies.details(); len(d) != 1 || d[0] != wantDetails {
		t.Errorf("details %q, want %q", d, wantDetails)
	}
}

// testEdgeDropsOriginalPath: edge requests (use_remote_address) lose the
// original path and host headers a client might send.
func testEdgeDropsOriginalPath(t *testing.T, _ UpstreamFailureRule) {
	up := startUpstream(t, nil)
	c := cfg{noExtProc: true, backendAddr: up.addr()}
	url := startSim(t, c.resources(t), nil)
	got := do(t, "GET", url+"/", "", map[string]string{"x-envoy-original-path": "/ak/secret/v1", "x-envoy-original-host": "evil"})
	if got.err != nil || got.status != 200 {
		t.Fatalf("got %d err=%v", got.status, got.err)
	}
	h := up.seen()[0].header
	for _, k := range []string{"x-envoy-original-path", "x-envoy-original-host"} {
		if v := h.Get(k); v != "" {
			t.Errorf("upstream got %s: %q", k, v)
		}
	}
}
