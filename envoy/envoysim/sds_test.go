package envoysim

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/tlsfiles/tlsfilestest"
)

// writeSDS writes the two SDS files of envoy/sds/ for the ext_proc cluster, naming the
// PEM files of f.
func writeSDS(t *testing.T, dir, certFile, keyFile, caFile string) (certSDS, caSDS string) {
	t.Helper()
	certSDS, caSDS = filepath.Join(dir, "extproc-client-certificate.yaml"), filepath.Join(dir, "extproc-trusted-ca.yaml")
	cert := fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: %s
  tls_certificate:
    certificate_chain:
      filename: %s
    private_key:
      filename: %s
`, controlplane.ExtProcCertificateSecret, certFile, keyFile)
	ca := fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: %s
  validation_context:
    trusted_ca:
      filename: %s
`, controlplane.ExtProcTrustedCASecret, caFile)
	if err := os.WriteFile(certSDS, []byte(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caSDS, []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	return certSDS, caSDS
}

// TestExtProcClusterMutualTLS: with controlplane.Options.ExtProcTLS the ext_proc cluster is
// mutual TLS from SDS files; envoysim presents the client certificate, verifies extproc's
// against the CA and its DNS name, and a processor whose certificate does not qualify fails
// the request (500: failure_mode_allow is off).
func TestExtProcClusterMutualTLS(t *testing.T) {
	t.Parallel()
	ca := tlsfilestest.NewCA(t, "extproc-ca")
	envoyCert, envoyKey := ca.Issue(t, []string{"envoy"}, x509.ExtKeyUsageClientAuth)
	envoyFiles := tlsfilestest.Write(t, t.TempDir(), envoyCert, envoyKey, ca.PEM)
	certSDS, caSDS := writeSDS(t, t.TempDir(), envoyFiles.CertFile, envoyFiles.KeyFile, envoyFiles.CAFile)
	up := startUpstream(t, sse(1, 0))

	// startTLSProcessor serves a processor over TLS with a certificate for names from
	// issuer, requiring client certificates from ca.
	startTLSProcessor := func(t *testing.T, issuer *tlsfilestest.CA, names []string) (*goodProcessor, string) {
		c, k := issuer.Issue(t, names, x509.ExtKeyUsageServerAuth)
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		clients := x509.NewCertPool()
		clients.AppendCertsFromPEM(ca.PEM)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := &goodProcessor{}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients,
			MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
		})))
		extprocsvc.RegisterExternalProcessorServer(srv, &fakeProcessor{handle: g.handle})
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
		return g, ln.Addr().String()
	}
	other := tlsfilestest.NewCA(t, "other-ca")
	for _, tc := range []struct {
		name   string
		issuer *tlsfilestest.CA
		names  []string
		ok     bool
	}{
		{"extproc's certificate", ca, []string{"ccproxy-extproc"}, true},
		{"another name from the CA", ca, []string{"someone-else"}, false},
		{"another CA", other, []string{"ccproxy-extproc"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, addr := startTLSProcessor(t, tc.issuer, tc.names)
			r, err := controlplane.BuildResources(controlplane.Options{
				ListenAddress: freePort(t), ExtProcAddress: addr, AnthropicURL: "http://" + up.addr(),
				ExtProcTLS: &controlplane.ExtProcTLS{CertificateSDSPath: certSDS, TrustedCASDSPath: caSDS},
			}.WithDefaults())
			if err != nil {
				t.Fatal(err)
			}
			var res []types.Resource
			for _, c := range r.Clusters {
				res = append(res, c)
			}
			for _, c := range r.Routes {
				res = append(res, c)
			}
			for _, l := range r.Listeners {
				res = append(res, l)
			}
			base := startSim(t, res, nil)
			got := do(t, "POST", base+"/v1/messages", `{"stream":true}`, map[string]string{"x-ccproxy-key": "ak_secret"})
			if tc.ok {
				if got.err != nil || got.status != 200 || len(g.seen()) == 0 {
					t.Fatalf("got %d %q err=%v, processor saw %d messages; want 200 through the processor", got.status, got.body, got.err, len(g.seen()))
				}
				return
			}
			if got.status != 500 || len(g.seen()) != 0 {
				t.Fatalf("got %d %q err=%v, processor saw %d messages; want 500 and nothing processed", got.status, got.body, got.err, len(g.seen()))
			}
		})
	}
}

// TestShippedExtProcSDSFiles: the SDS files shipped in envoy/sds/ hold the Secrets the
// control plane's ext_proc cluster names, at the paths it reads them from by default, and
// point at one mounted Secret directory.
func TestShippedExtProcSDSFiles(t *testing.T) {
	for file, want := range map[string]string{
		"../sds/extproc-client-certificate.yaml": controlplane.ExtProcCertificateSecret,
		"../sds/extproc-trusted-ca.yaml":         controlplane.ExtProcTrustedCASecret,
	} {
		if filepath.Base(file) != filepath.Base(map[string]string{
			controlplane.ExtProcCertificateSecret: controlplane.DefaultExtProcCertificateSDS,
			controlplane.ExtProcTrustedCASecret:   controlplane.DefaultExtProcTrustedCASDS,
		}[want]) {
			t.Errorf("%s is not the file the control plane reads for %s", file, want)
		}
		s, err := (&sdsRef{name: want, path: file}).load()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		if c := s.GetTlsCertificate(); c != nil {
			names = append(names, c.GetCertificateChain().GetFilename(), c.GetPrivateKey().GetFilename(), c.GetWatchedDirectory().GetPath()+"/")
		}
		if v := s.GetValidationContext(); v != nil {
			names = append(names, v.GetTrustedCa().GetFilename(), v.GetWatchedDirectory().GetPath()+"/")
		}
		if len(names) == 0 {
			t.Errorf("%s: secret %s holds neither a certificate nor a CA", file, want)
		}
		for _, n := range names {
			if filepath.Dir(n) != "/etc/envoy/extproc-tls" {
				t.Errorf("%s: %s is not in /etc/envoy/extproc-tls", file, n)
			}
		}
	}
}
