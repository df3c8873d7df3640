package controlplane

import (
	"regexp"
	"strings"
	"testing"

	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// operatorPattern matches one Envoy command operator: %NAME%, %NAME(ARG)%, %NAME(ARG):Z%.
var operatorPattern = regexp.MustCompile(`%([A-Z_]+)(\(([^)]*)\))?(:[0-9]+)?%`)

// keySafeOperator reports why op could put an access key into a log line, or "" when it
// cannot. The key travels in the path (/ak/<key>/…) and the x-ccproxy-key header, so only
// operators that read neither are allowed: arguments-free stream facts, three named request
// headers (x-request-id is Envoy's own on external requests), and the dynamic metadata keys
// ccproxy publishes for logging.
func keySafeOperator(op string) string {
	m := operatorPattern.FindStringSubmatch(op)
	if m == nil || m[0] != op {
		return "not a single command operator"
	}
	name, hasArg, arg := m[1], m[2] != "", m[3]
	switch name {
	case "START_TIME", "PROTOCOL", "ROUTE_NAME", "RESPONSE_CODE", "RESPONSE_CODE_DETAILS", "RESPONSE_FLAGS",
		"UPSTREAM_REQUEST_ATTEMPT_COUNT", "UPSTREAM_CLUSTER", "UPSTREAM_HOST", "UPSTREAM_TRANSPORT_FAILURE_REASON",
		"BYTES_RECEIVED", "BYTES_SENT", "DURATION", "RESPONSE_DURATION", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		if hasArg {
			return "arguments are not vetted"
		}
		return ""
	case "REQ", "REQUEST_HEADER":
		switch strings.ToLower(arg) {
		case "x-request-id", ":method", "user-agent":
			return ""
		}
		return "request header " + arg + " is not one of x-request-id, :method, user-agent (the path and x-ccproxy-key carry the key)"
	case "DYNAMIC_METADATA":
		if arg == "ccproxy:content_length" {
			return ""
		}
		return "dynamic metadata " + arg + " is not a vetted key"
	}
	return name + " is not a vetted operator (it may read the path, a header or a whole metadata namespace)"
}

func TestKeySafeOperator(t *testing.T) {
	unsafe := []string{
		"%REQ(:PATH)%", "%REQ(:path)%", "%REQUEST_HEADER(:PATH)%", "%PATH%", "%PATH(WQ:ORIG)%",
		"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "%REQ(USER-AGENT?:PATH)%", "%REQ(X-CCPROXY-KEY)%",
		"%REQ(AUTHORIZATION)%", "%REQ(X-API-KEY)%", "%REQ(REFERER)%", "%REQ_WITHOUT_QUERY(:PATH)%",
		"%QUERY_PARAM(key)%", "%CEL(request.path)%", "%DYNAMIC_METADATA(ccproxy)%",
		"%DYNAMIC_METADATA(envoy.filters.http.ext_proc)%", "%FILTER_STATE(x)%", "%DURATION(X)%",
		"%DURATION% %REQ(:PATH)%", "text",
	}
	for _, op := range unsafe {
		if keySafeOperator(op) == "" {
			t.Errorf("%s accepted as key-safe", op)
		}
	}
	for _, op := range []string{"%REQ(X-REQUEST-ID)%", "%REQ(USER-AGENT):128%", "%ROUTE_NAME%", "%DYNAMIC_METADATA(ccproxy:content_length)%"} {
		if why := keySafeOperator(op); why != "" {
			t.Errorf("%s refused: %s", op, why)
		}
	}
}

// TestAccessLogCannotCarryTheKey: every field of the access log the listener is served with
// is exactly one key-safe operator, and the served format is AccessLogFields.
func TestAccessLogCannotCarryTheKey(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := BuildResources(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := r.Listeners[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			logs := hcm.GetAccessLog()
			if len(logs) != 1 || logs[0].GetName() != "envoy.access_loggers.stdout" {
				t.Fatalf("access_log = %v, want one envoy.access_loggers.stdout", logs)
			}
			stdout := &streamv3.StdoutAccessLog{}
			if err := logs[0].GetTypedConfig().UnmarshalTo(stdout); err != nil {
				t.Fatal(err)
			}
			if logs[0].GetFilter() != nil {
				t.Errorf("access log filter %v: want every request logged", logs[0].GetFilter())
			}
			fields := stdout.GetLogFormat().GetJsonFormat().GetFields()
			want := AccessLogFields()
			if len(fields) != len(want) {
				t.Errorf("%d fields, want %d", len(fields), len(want))
			}
			for k, v := range fields {
				op := v.GetStringValue()
				if op != want[k] {
					t.Errorf("field %s = %q, want %q", k, op, want[k])
				}
				if why := keySafeOperator(op); why != "" {
					t.Errorf("field %s = %q can carry the access key: %s", k, op, why)
				}
			}
			if stdout.GetLogFormat().GetOmitEmptyValues() || stdout.GetLogFormat().GetTextFormatSource() != nil {
				t.Errorf("log_format = %v, want json_format only", stdout.GetLogFormat())
			}
		})
	}
}
