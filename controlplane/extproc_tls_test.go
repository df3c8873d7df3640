package controlplane

import (
	"errors"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TestExtProcClusterTLS: with ExtProcTLS the ext_proc cluster is mutual TLS 1.3 with ALPN h2,
// the client certificate and the CA bundle from the SDS files (watched through their
// directory), the SNI and an exact DNS SAN match on extproc's name; without it, plaintext. A
// Unix socket takes no TLS.
func TestExtProcClusterTLS(t *testing.T) {
	build := func(t *testing.T, o Options) *clusterv3.Cluster {
		t.Helper()
		r, err := BuildResources(o.WithDefaults())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Clusters {
			if c.GetName() == ExtProcClusterName {
				return c
			}
		}
		t.Fatal("no ext_proc cluster")
		return nil
	}
	if c := build(t, Options{ListenAddress: "127.0.0.1:8080", ExtProcAddress: "10.0.0.7:9002"}); c.GetTransportSocket() != nil {
		t.Errorf("plaintext by default; got %v", c.GetTransportSocket())
	}
	c := build(t, Options{ListenAddress: "127.0.0.1:8080", ExtProcAddress: "10.0.0.7:9002", ExtProcTLS: &ExtProcTLS{}})
	var utc tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatal(err)
	}
	ctc := utc.GetCommonTlsContext()
	cert := ctc.GetTlsCertificateSdsSecretConfigs()
	cvc := ctc.GetCombinedValidationContext()
	san := cvc.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	switch {
	case utc.GetSni() != DefaultExtProcServerName:
		t.Errorf("sni %q", utc.GetSni())
	case ctc.GetTlsParams().GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_3:
		t.Errorf("tls_params %v", ctc.GetTlsParams())
	case len(ctc.GetAlpnProtocols()) != 1 || ctc.GetAlpnProtocols()[0] != "h2":
		t.Errorf("alpn %v", ctc.GetAlpnProtocols())
	case len(cert) != 1 || cert[0].GetName() != ExtProcCertificateSecret ||
		cert[0].GetSdsConfig().GetPathConfigSource().GetPath() != DefaultExtProcCertificateSDS ||
		cert[0].GetSdsConfig().GetPathConfigSource().GetWatchedDirectory().GetPath() != "/etc/envoy/sds":
		t.Errorf("client certificate %v", cert)
	case cvc.GetValidationContextSdsSecretConfig().GetName() != ExtProcTrustedCASecret ||
		cvc.GetValidationContextSdsSecretConfig().GetSdsConfig().GetPathConfigSource().GetPath() != DefaultExtProcTrustedCASDS:
		t.Errorf("CA %v", cvc.GetValidationContextSdsSecretConfig())
	case len(san) != 1 || san[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || san[0].GetMatcher().GetExact() != DefaultExtProcServerName:
		t.Errorf("SAN matchers %v", san)
	}
	_, err := BuildResources(Options{ListenAddress: "127.0.0.1:8080", ExtProcAddress: "unix:///run/x.sock", ExtProcTLS: &ExtProcTLS{}}.WithDefaults())
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("TLS on a Unix socket: err = %v, want ErrInvalidOptions", err)
	}
}
