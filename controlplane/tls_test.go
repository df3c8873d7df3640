package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/internal/tlsfiles"
	"github.com/ccproxy/ccproxy/internal/tlsfiles/tlsfilestest"
)

// TestServeTLS runs real TLS handshakes against the xDS server: a client with a certificate
// from the configured CA gets configuration; a client without a certificate, with one from
// another CA, or in plaintext is refused before any xDS request.
func TestServeTLS(t *testing.T) {
	const name = "ccproxy-controlplane"
	ca := tlsfilestest.NewCA(t, "xds-ca")
	sc, sk := ca.Issue(t, []string{name}, x509.ExtKeyUsageServerAuth)
	serverFiles := tlsfilestest.Write(t, t.TempDir(), sc, sk, ca.PEM)
	cc, ck := ca.Issue(t, []string{"envoy"}, x509.ExtKeyUsageClientAuth)
	clientFiles := tlsfilestest.Write(t, t.TempDir(), cc, ck, ca.PEM)
	other := tlsfilestest.NewCA(t, "other-ca")
	oc, ok := other.Issue(t, []string{"envoy"}, x509.ExtKeyUsageClientAuth)
	otherFiles := tlsfilestest.Write(t, t.TempDir(), oc, ok, ca.PEM)

	logs := &syncBuffer{}
	srv, err := NewServer(productionOptions, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, err := tlsfiles.ServerConfig(serverFiles, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ctx, lis, serverTLS) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeTLS returned %v after cancel", err)
		}
	})

	clientTLS := func(t *testing.T, f tlsfiles.Files) credentials.TransportCredentials {
		t.Helper()
		c, err := tlsfiles.ClientConfig(f, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return credentials.NewTLS(c)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	tests := []struct {
		name  string
		creds func(t *testing.T) credentials.TransportCredentials
		ok    bool
	}{
		{"certificate from the CA", func(t *testing.T) credentials.TransportCredentials { return clientTLS(t, clientFiles) }, true},
		{"no client certificate", func(*testing.T) credentials.TransportCredentials {
			return credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13})
		}, false},
		{"certificate from another CA", func(t *testing.T) credentials.TransportCredentials { return clientTLS(t, otherFiles) }, false},
		{"plaintext", func(*testing.T) credentials.TransportCredentials { return insecure.NewCredentials() }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(tc.creds(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			resp, herr := healthpb.NewHealthClient(conn).Check(rctx, &healthpb.HealthCheckRequest{})
			clusters, xerr := firstClusters(rctx, conn, envoyNode("envoy-tls", 1, 40, 0), false)
			if tc.ok {
				if herr != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("health: %v, %v", resp, herr)
				}
				if xerr != nil || len(clusters) != 2 {
					t.Errorf("ADS: %d clusters, %v; want the production configuration's 2", len(clusters), xerr)
				}
				return
			}
			for what, err := range map[string]error{"health": herr, "ADS": xerr} {
				if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
					t.Errorf("%s: err = %v, want Unavailable (handshake refused)", what, err)
				}
			}
			if len(clusters) != 0 {
				t.Errorf("refused client got %d clusters", len(clusters))
			}
		})
	}
	if !strings.Contains(logs.String(), `"security":"mutual TLS"`) {
		t.Errorf("log does not say xDS is served over mutual TLS:\n%s", logs.String())
	}
	if err := srv.ServeTLS(context.Background(), lis, nil); err == nil {
		t.Error("ServeTLS without a TLS configuration served")
	}
}
