package controlplane

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ccproxy/ccproxy/internal/dataplane"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// findCluster and findRoute return the named resource of r, or nil.
func findCluster(r *Resources, name string) *clusterv3.Cluster {
	for _, c := range r.Clusters {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func findRoute(r *Resources, name string) *routev3.Route {
	for _, rt := range r.Routes[0].GetVirtualHosts()[0].GetRoutes() {
		if rt.GetName() == name {
			return rt
		}
	}
	return nil
}

// TestFallbackProductionSettings asserts each contract item of the plan+bedrock-<region>
// cluster and route, one subtest per setting.
func TestFallbackProductionSettings(t *testing.T) {
	if got := FallbackClusterName("us-east-1"); got != "plan+bedrock-us-east-1" || !strings.HasPrefix(got, dataplane.FallbackRoutePrefix) {
		t.Fatalf("FallbackClusterName = %q", got)
	}
	d := decodeBedrock(t, bedrockOptions, "us-east-1")
	name := FallbackClusterName("us-east-1")
	c := findCluster(d.all, name)
	rt := findRoute(d.all, name)
	if c == nil || rt == nil {
		t.Fatalf("no %s cluster or route", name)
	}
	action := rt.GetRoute()

	t.Run("route matches the routing header exactly and targets the cluster", func(t *testing.T) {
		hs := rt.GetMatch().GetHeaders()
		if len(hs) != 1 || hs[0].GetName() != dataplane.RouteHeader || hs[0].GetStringMatch().GetExact() != name || hs[0].GetStringMatch().GetIgnoreCase() || hs[0].GetInvertMatch() {
			t.Errorf("headers = %v, want exact %s: %s", hs, dataplane.RouteHeader, name)
		}
		if rt.GetMatch().GetPrefix() != "/" || action.GetCluster() != name {
			t.Errorf("match = %v, cluster = %q", rt.GetMatch(), action.GetCluster())
		}
	})
	t.Run("route has the plan route's settings but the retry policy", func(t *testing.T) {
		want := proto.Clone(d.planRoute).(*routev3.Route)
		want.Name = name
		want.GetMatch().GetHeaders()[0].GetStringMatch().MatchPattern = rt.GetMatch().GetHeaders()[0].GetStringMatch().GetMatchPattern()
		want.GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: name}
		want.GetRoute().RetryPolicy = action.GetRetryPolicy()
		if !proto.Equal(rt, want) {
			t.Errorf("route = %v\nwant %v", rt, want)
		}
	})
	t.Run("retry policy: one retry on the fallback codes, resets and connect failures", func(t *testing.T) {
		rp := action.GetRetryPolicy()
		if rp.GetRetryOn() != "retriable-status-codes,reset,connect-failure" {
			t.Errorf("retry_on = %q", rp.GetRetryOn())
		}
		if want := []uint32{429, 500, 502, 503, 504, 529}; !slices.Equal(rp.GetRetriableStatusCodes(), want) {
			t.Errorf("retriable_status_codes = %v, want %v", rp.GetRetriableStatusCodes(), want)
		}
		if rp.GetNumRetries().GetValue() != 1 {
			t.Errorf("num_retries = %v, want 1 (a third attempt would go back to Plan)", rp.GetNumRetries())
		}
		wantDuration(t, "per_try_timeout", rp.GetPerTryTimeout(), DefaultPerTryTimeout)
		if rp.GetRetryHostPredicate() != nil || rp.GetRetryBackOff() != nil || rp.GetHostSelectionRetryMaxAttempts() != 0 || len(rp.GetRetriableHeaders()) != 0 {
			t.Errorf("retry policy sets more than the contract: %v", rp)
		}
	})
	t.Run("retry priority previous_priorities with update_frequency 1", func(t *testing.T) {
		p := action.GetRetryPolicy().GetRetryPriority()
		if p.GetName() != "envoy.retry_priorities.previous_priorities" {
			t.Errorf("retry_priority.name = %q", p.GetName())
		}
		cfg := unpack(t, p.GetTypedConfig(), &previousprioritiesv3.PreviousPrioritiesConfig{})
		if cfg.GetUpdateFrequency() != 1 {
			t.Errorf("update_frequency = %d, want 1", cfg.GetUpdateFrequency())
		}
	})
	t.Run("plan route still never retries a 429", func(t *testing.T) {
		rp := d.planRoute.GetRoute().GetRetryPolicy()
		if rp.GetRetryOn() != planRetryOn || len(rp.GetRetriableStatusCodes()) != 0 || rp.GetRetryPriority() != nil {
			t.Errorf("plan retry policy = %v", rp)
		}
	})
	t.Run("cluster: Plan at priority 0, the region's Bedrock at priority 1", func(t *testing.T) {
		eps := c.GetLoadAssignment().GetEndpoints()
		if c.GetLoadAssignment().GetClusterName() != name || len(eps) != 2 {
			t.Fatalf("load_assignment = %v", c.GetLoadAssignment())
		}
		planEP := d.planCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0]
		bedrockEP := d.cluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0]
		// The Plan endpoint also names its host; the Bedrock endpoint is exactly the Bedrock
		// cluster's, metadata included.
		planMD, err := structpb.NewStruct(map[string]any{dataplane.BackendKey: dataplane.BackendPlan, dataplane.HostKey: "api.anthropic.com"})
		if err != nil {
			t.Fatal(err)
		}
		wantPlan := proto.Clone(planEP).(*endpointv3.LbEndpoint)
		wantPlan.GetMetadata().GetFilterMetadata()[dataplane.MetadataNamespace] = planMD
		for i, want := range []*endpointv3.LbEndpoint{wantPlan, bedrockEP} {
			if eps[i].GetPriority() != uint32(i) || len(eps[i].GetLbEndpoints()) != 1 {
				t.Errorf("endpoints[%d] = %v, want priority %d with one endpoint", i, eps[i], i)
				continue
			}
			if got := eps[i].GetLbEndpoints()[0]; !proto.Equal(got, want) {
				t.Errorf("endpoints[%d] = %v, want %v", i, got, want)
			}
		}
	})
	t.Run("cluster settings, TLS, protocol and upstream filters as the Bedrock cluster", func(t *testing.T) {
		want := proto.Clone(d.cluster).(*clusterv3.Cluster)
		want.Name = name
		want.LoadAssignment = c.GetLoadAssignment()
		if !proto.Equal(c, want) {
			t.Errorf("cluster = %v\nwant %v", c, want)
		}
		// Spelled out, so that a change to the Bedrock cluster cannot drop them unnoticed.
		if th := c.GetCircuitBreakers().GetThresholds(); len(th) != 1 || th[0].GetMaxRetries().GetValue() != DefaultCircuitBreakerLimit {
			t.Errorf("circuit breakers = %v, want max_retries %d (Envoy's default 3 stops fallbacks)", th, DefaultCircuitBreakerLimit)
		}
		tls := unpack(t, c.GetTransportSocket().GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
		if !tls.GetAutoHostSni() || !tls.GetAutoSniSanValidation() || tls.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != DefaultUpstreamCAFile {
			t.Errorf("tls = %v", tls)
		}
		po := unpack(t, c.GetTypedExtensionProtocolOptions()[httpProtocolOptsName], &upstreamhttpv3.HttpProtocolOptions{})
		var names []string
		for _, f := range po.GetHttpFilters() {
			names = append(names, f.GetName())
		}
		if want := []string{UpstreamExtProcName, ContentLengthFilterName, upstreamCodecName}; !slices.Equal(names, want) {
			t.Errorf("http_filters = %v, want %v", names, want)
		}
	})
	t.Run("no health checks and no outlier detection", func(t *testing.T) {
		if len(c.GetHealthChecks()) != 0 || c.GetOutlierDetection() != nil {
			t.Errorf("health_checks = %v, outlier_detection = %v: Plan hosts are shared by every user", c.GetHealthChecks(), c.GetOutlierDetection())
		}
	})
	t.Run("router-level ext_proc sends the attempt count with the response", func(t *testing.T) {
		if got := d.routerFilter.GetResponseAttributes(); !slices.Equal(got, []string{dataplane.AttemptCount}) || dataplane.AttemptCount != "upstream.request_attempt_count" {
			t.Errorf("response_attributes = %v, want [%s]", got, dataplane.AttemptCount)
		}
		if len(d.routerFilter.GetRequestAttributes()) != 0 {
			t.Errorf("request_attributes = %v, want none", d.routerFilter.GetRequestAttributes())
		}
	})
	t.Run("runtime config lists the fallback regions", func(t *testing.T) {
		if want := []string{"us-east-1", "us-west-2"}; !slices.Equal(d.runtime.GetFallbackRegions(), want) {
			t.Errorf("fallback_regions = %v, want %v", d.runtime.GetFallbackRegions(), want)
		}
	})
	if len(d.all.Warnings) != 0 {
		t.Errorf("warnings = %v, want none", d.all.Warnings)
	}
}

// mixedOptions has TLS Bedrock but a plaintext Plan: no cluster can hold both.
var mixedOptions = func() Options {
	o := bedrockOptions
	o.AnthropicURL = "http://127.0.0.1:18081"
	return o
}()

// TestFallbackMixedSchemes: a region whose Bedrock URL has another scheme than Plan's gets no
// fallback cluster or route, is absent from fallback_regions, and the skip is a warning.
func TestFallbackMixedSchemes(t *testing.T) {
	r, err := BuildResources(mixedOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Clusters {
		if strings.HasPrefix(c.GetName(), dataplane.FallbackRoutePrefix) {
			t.Errorf("cluster %s built for mixed schemes", c.GetName())
		}
	}
	var routes []string
	for _, rt := range r.Routes[0].GetVirtualHosts()[0].GetRoutes() {
		routes = append(routes, rt.GetName())
	}
	if want := []string{PlanRouteName, "bedrock-us-east-1", "bedrock-us-west-2", NotFoundRouteName}; !slices.Equal(routes, want) {
		t.Errorf("routes = %v, want %v", routes, want)
	}
	rt := unpack(t, r.ExtensionConfigs[0].GetTypedConfig(), &runtimev1.BedrockConfig{})
	if len(rt.GetFallbackRegions()) != 0 || !slices.Equal(rt.GetRegions(), []string{"us-east-1", "us-west-2"}) {
		t.Errorf("regions = %v, fallback_regions = %v", rt.GetRegions(), rt.GetFallbackRegions())
	}
	if len(r.Warnings) != 2 {
		t.Fatalf("warnings = %q, want one per region", r.Warnings)
	}
	for i, region := range []string{"us-east-1", "us-west-2"} {
		w := r.Warnings[i]
		if !strings.Contains(w, FallbackClusterName(region)) || !strings.Contains(w, "AnthropicURL is http") || !strings.Contains(w, "is https") {
			t.Errorf("warning %d = %q", i, w)
		}
	}
	// Pure: the same options give the same warnings.
	r2, err := BuildResources(mixedOptions)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Warnings, r2.Warnings) {
		t.Errorf("warnings differ between builds: %q, %q", r.Warnings, r2.Warnings)
	}
}

// TestFallbackWarningLoggedOncePerConfiguration: the server logs the warnings when it installs
// a configuration, not again for an unchanged one.
func TestFallbackWarningLoggedOncePerConfiguration(t *testing.T) {
	logs := &syncBuffer{}
	srv, _ := startServer(t, mixedOptions, logs, nil)
	count := func() int { return strings.Count(logs.String(), `"msg":"xds configuration incomplete"`) }
	if n := count(); n != 2 {
		t.Fatalf("logged %d warnings after start, want 2:\n%s", n, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Update(ctx, mixedOptions); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("logged %d warnings after an unchanged update, want still 2", n)
	}
	if err := srv.Update(ctx, bedrockOptions); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("logged %d warnings after a configuration without skips, want still 2", n)
	}
}
