package envoysim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	return &testCA{
		cert: must(x509.ParseCertificate(der)),
		key:  key,
		pem:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
	}
}

func (ca *testCA) leaf(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestUpstreamTLS: SNI is the endpoint hostname (auto_host_sni), the SAN is
// checked against it (auto_sni_san_validation), the chain against
// trusted_ca, and without trusted_ca nothing is verified.
func TestUpstreamTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "test root")
	other := newCA(t, "other root")
	const host = "api.anthropic.com"
	tests := []struct {
		name       string
		cert       tls.Certificate
		trustedCA  string
		sanCheck   bool
		wantStatus int
		wantBody   string // prefix
		// prefix of the local reply's response code details; since 1.39 the
		// transport failure reason is there and not in the body
		wantDetails string
	}{
		{"valid", ca.leaf(t, host), ca.pem, true, 200, "h2 api.anthropic.com api.anthropic.com", ""},
		{"wrong SAN", ca.leaf(t, "other.example"), ca.pem, true, 503,
			"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
			"upstream_reset_before_response_started{remote_connection_failure|TLS_error:|CERTIFICATE_VERIFY_FAILED"},
		{"wrong SAN without SAN validation verifies the chain only", ca.leaf(t, "other.example"), ca.pem, false, 200, "h2 api.anthropic.com api.anthropic.com", ""},
		{"untrusted CA", other.leaf(t, host), ca.pem, true, 503,
			"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
			"upstream_reset_before_response_started{remote_connection_failure|TLS_error:|CERTIFICATE_VERIFY_FAILED"},
		{"no trusted_ca: nothing verified", other.leaf(t, "evil.example"), "", true, 200, "h2 api.anthropic.com api.anthropic.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				proto := "h1"
				if r.ProtoMajor == 2 {
					proto = "h2"
				}
				fmt.Fprintf(w, "%s %s %s", proto, r.TLS.ServerName, r.Host)
			}))
			srv.EnableHTTP2 = true
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{tt.cert}}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			var mu sync.Mutex
			var dialed []string
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dialed = append(dialed, addr)
				mu.Unlock()
				if addr == host+":443" {
					addr = srv.Listener.Addr().String()
				}
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			utc := &tlsv3.UpstreamTlsContext{
				AutoHostSni:          true,
				AutoSniSanValidation: tt.sanCheck,
				CommonTlsContext:     &tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", "http/1.1"}},
			}
			if tt.trustedCA != "" {
				utc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: tt.trustedCA}},
				}}
			}
			c := cfg{noExtProc: true,
				planRoute: func(r *routev3.Route) {
					r.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
				},
				backend: func(cl *clusterv3.Cluster) {
					cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
					cl.LoadAssignment.Endpoints[0].LbEndpoints[0].HostIdentifier = &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: tcpAddress(t, host+":443"), Hostname: host,
					}}
					cl.TransportSocket = &corev3.TransportSocket{Name: socketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, utc)}}
					cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
						UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &upstreamhttpv3.HttpProtocolOptions_AutoHttpConfig{
							HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
							Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
						}},
					})}
				},
			}
			var replies localReplyLog
			_, url := startSimOpts(t, Options{Resources: c.resources(t), Dial: dial, localReplies: replies.record})
			got := do(t, "GET", url+"/v1/models", "", map[string]string{"host": "gateway.example"})
			if got.err != nil || got.status != tt.wantStatus || !strings.HasPrefix(got.body, tt.wantBody) {
				t.Fatalf("got %d %q err=%v, want %d %q…", got.status, got.body, got.err, tt.wantStatus, tt.wantBody)
			}
			if tt.wantStatus == 503 && got.body != tt.wantBody {
				t.Errorf("body %q, want exactly %q (no transport failure reason since 1.39)", got.body, tt.wantBody)
			}
			if d := replies.details(); tt.wantDetails != "" && (len(d) != 1 || !strings.HasPrefix(d[0], tt.wantDetails)) {
				t.Errorf("local reply details %q, want one starting with %q", d, tt.wantDetails)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dialed) == 0 || dialed[0] != host+":443" {
				t.Errorf("dialed %v, want %s:443", dialed, host)
			}
		})
	}
}
