package main

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/tlsfiles"
	"github.com/ccproxy/ccproxy/internal/tlsfiles/tlsfilestest"
)

// TestXDSSecurityChoice: xDS is mutual TLS unless plaintext is asked for explicitly, on both
// ends; half a TLS configuration, or TLS files together with plaintext, is an error at start.
func TestXDSSecurityChoice(t *testing.T) {
	ca := tlsfilestest.NewCA(t, "xds-ca")
	c, k := ca.Issue(t, []string{"ccproxy-controlplane"}, x509.ExtKeyUsageServerAuth)
	f := tlsfilestest.Write(t, t.TempDir(), c, k, ca.PEM)
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name     string
		files    tlsfiles.Files
		insecure bool
		wantTLS  bool
		wantErr  string
	}{
		{"nothing set: refused", tlsfiles.Files{}, false, false, "needs mutual TLS"},
		{"explicit plaintext", tlsfiles.Files{}, true, false, ""},
		{"three files: TLS", f, false, true, ""},
		{"two files: refused", tlsfiles.Files{CertFile: f.CertFile, KeyFile: f.KeyFile}, false, false, "needs mutual TLS"},
		{"files and plaintext: refused", f, true, false, "contradict"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server := xdsTLSSettings{CertFile: tc.files.CertFile, KeyFile: tc.files.KeyFile, ClientCAFile: tc.files.CAFile, Insecure: tc.insecure}
			client := controlPlaneTLSSettings{CertFile: tc.files.CertFile, KeyFile: tc.files.KeyFile, CAFile: tc.files.CAFile, Insecure: tc.insecure}
			st, serr := server.serverTLS(log)
			ct, cerr := client.clientTLS("ccproxy-controlplane:18000", log)
			for side, err := range map[string]error{"server": serr, "client": cerr} {
				if tc.wantErr == "" && err != nil {
					t.Errorf("%s: %v", side, err)
				}
				if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Errorf("%s: err = %v, want %q", side, err, tc.wantErr)
				}
			}
			if (st != nil) != tc.wantTLS || (ct != nil) != tc.wantTLS {
				t.Errorf("server TLS %v, client TLS %v; want TLS = %v", st != nil, ct != nil, tc.wantTLS)
			}
		})
	}
}

// TestExtProcRuntimeConfigOverMutualTLS wires the two ends as the commands do: extproc's
// runtime client, with its certificate from CCPROXY_CONTROLPLANE_TLS_*, receives its
// configuration from a control plane serving xDS over mutual TLS from CCPROXY_XDS_TLS_*.
func TestExtProcRuntimeConfigOverMutualTLS(t *testing.T) {
	const name = "localhost"
	ca := tlsfilestest.NewCA(t, "xds-ca")
	sc, sk := ca.Issue(t, []string{name}, x509.ExtKeyUsageServerAuth)
	sf := tlsfilestest.Write(t, t.TempDir(), sc, sk, ca.PEM)
	cc, ck := ca.Issue(t, []string{"extproc"}, x509.ExtKeyUsageClientAuth)
	cf := tlsfilestest.Write(t, t.TempDir(), cc, ck, ca.PEM)
	log := slog.New(slog.DiscardHandler)

	serverTLS, err := xdsTLSSettings{CertFile: sf.CertFile, KeyFile: sf.KeyFile, ClientCAFile: sf.CAFile}.serverTLS(log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.NewServer(controlplane.Options{ListenAddress: "127.0.0.1:8080", ExtProcAddress: "127.0.0.1:9002"}.WithDefaults(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ctx, ln, serverTLS) }()
	defer func() { cancel(); <-served }()

	_, port, _ := net.SplitHostPort(ln.Addr().String())
	s := &extprocSettings{
		ControlPlaneAddr: net.JoinHostPort(name, port),
		ControlPlaneTLS:  controlPlaneTLSSettings{CertFile: cf.CertFile, KeyFile: cf.KeyFile, CAFile: cf.CAFile},
	}
	clientTLS, err := s.ControlPlaneTLS.clientTLS(s.ControlPlaneAddr, log)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := runtimeconfig.NewClient(runtimeconfig.ClientConfig{Addr: s.ControlPlaneAddr, TLS: clientTLS, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- rc.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	select {
	case <-rc.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("extproc received no runtime configuration over mutual TLS")
	}
}
