package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/tlsfiles"
	"github.com/ccproxy/ccproxy/internal/tlsfiles/tlsfilestest"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// TestInternalChannelPlaintextRefused: the KeyService (both ends) and the ext_proc server use
// plaintext only on loopback (or a Unix socket) unless told otherwise; a non-loopback address
// without TLS files stops the command at start with an error naming the settings.
func TestInternalChannelPlaintextRefused(t *testing.T) {
	ca := tlsfilestest.NewCA(t, "internal-ca")
	c, k := ca.Issue(t, []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	f := tlsfilestest.Write(t, t.TempDir(), c, k, ca.PEM)
	log := slog.New(slog.DiscardHandler)
	sides := map[string]channelNames{
		"keyservice server": keyServiceServerNames(),
		"keyservice client": keyServiceClientNames(),
		"extproc server":    extProcServerNames(),
	}
	tests := []struct {
		name     string
		addr     string
		files    tlsfiles.Files
		insecure bool
		wantTLS  bool
		wantErr  string
	}{
		{"loopback IPv4 plaintext", "127.0.0.1:9091", tlsfiles.Files{}, false, false, ""},
		{"loopback IPv6 plaintext", "[::1]:9091", tlsfiles.Files{}, false, false, ""},
		{"localhost plaintext", "localhost:9091", tlsfiles.Files{}, false, false, ""},
		{"unix socket plaintext", "", tlsfiles.Files{}, false, false, ""},
		{"every interface plaintext: refused", "0.0.0.0:9091", tlsfiles.Files{}, false, false, "refusing plaintext on the non-loopback address 0.0.0.0:9091"},
		{"pod address plaintext: refused", "10.1.2.3:9091", tlsfiles.Files{}, false, false, "refusing plaintext on the non-loopback address"},
		{"service name plaintext: refused", "ccproxy-admin:9091", tlsfiles.Files{}, false, false, "refusing plaintext"},
		{"non-loopback plaintext, asked for", "0.0.0.0:9091", tlsfiles.Files{}, true, false, ""},
		{"non-loopback mutual TLS", "0.0.0.0:9091", f, false, true, ""},
		{"loopback mutual TLS", "127.0.0.1:9091", f, false, true, ""},
		{"two files: refused", "0.0.0.0:9091", tlsfiles.Files{CertFile: f.CertFile, KeyFile: f.KeyFile}, false, false, "set all three"},
		{"files and plaintext: refused", "0.0.0.0:9091", f, true, false, "contradict"},
		{"files on a unix socket: refused", "", f, false, false, "TCP addresses only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for side, n := range sides {
				ch := channelTLS{Files: tc.files, Insecure: tc.insecure}
				var cfg *tls.Config
				var err error
				if n.server {
					cfg, err = ch.serverTLS(n, tc.addr, log)
				} else {
					cfg, err = ch.clientTLS(n, tc.addr, log)
				}
				if tc.wantErr == "" && err != nil {
					t.Errorf("%s: %v", side, err)
				}
				if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Errorf("%s: err = %v, want %q", side, err, tc.wantErr)
				}
				if tc.wantErr != "" && err != nil && !strings.Contains(err.Error(), "--"+n.flag) {
					t.Errorf("%s: error %q does not name the --%s settings", side, err, n.flag)
				}
				if (cfg != nil) != tc.wantTLS {
					t.Errorf("%s: TLS = %v, want %v", side, cfg != nil, tc.wantTLS)
				}
			}
		})
	}
}

// TestKeyServiceDefaultsToLoopback: the KeyService's default address is loopback, so a plain
// `ccproxy admin` does not expose it.
func TestKeyServiceDefaultsToLoopback(t *testing.T) {
	for _, s := range (&adminSettings{}).groups() {
		for _, set := range s.Settings {
			if set.Flag == "admin-grpc-addr" && !isLoopback(set.Default) {
				t.Errorf("--admin-grpc-addr defaults to %q, not a loopback address", set.Default)
			}
		}
	}
}

// mtlsPair is a server and client configuration as the commands build them from files.
func mtlsPair(t *testing.T, server, client channelNames, addr string) (serverTLS, clientTLS *tls.Config, ca *tlsfilestest.CA) {
	t.Helper()
	ca = tlsfilestest.NewCA(t, "internal-ca")
	sc, sk := ca.Issue(t, []string{"localhost", "127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	cc, ck := ca.Issue(t, []string{"extproc"}, x509.ExtKeyUsageClientAuth)
	log := slog.New(slog.DiscardHandler)
	var err error
	if serverTLS, err = (channelTLS{Files: tlsfilestest.Write(t, t.TempDir(), sc, sk, ca.PEM)}).serverTLS(server, addr, log); err != nil {
		t.Fatal(err)
	}
	if clientTLS, err = (channelTLS{Files: tlsfilestest.Write(t, t.TempDir(), cc, ck, ca.PEM)}).clientTLS(client, addr, log); err != nil {
		t.Fatal(err)
	}
	return serverTLS, clientTLS, ca
}

// checkClients connects to addr as three clients: with the client certificate (served),
// plaintext and TLS without a certificate (both refused).
func checkClients(t *testing.T, addr string, clientTLS *tls.Config, ca *tlsfilestest.CA) {
	t.Helper()
	noCert := &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	noCert.RootCAs.AppendCertsFromPEM(ca.PEM)
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"client certificate", credentials.NewTLS(clientTLS), true},
		{"plaintext", insecure.NewCredentials(), false},
		{"TLS without a client certificate", credentials.NewTLS(noCert), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("served; want the connection refused")
			}
		})
	}
}

// TestKeyServiceOverMutualTLS: with the admin-grpc-tls files the KeyService serves only
// clients with a certificate from its CA; extproc's keyservice-tls configuration is one.
func TestKeyServiceOverMutualTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort("localhost", port)
	serverTLS, clientTLS, ca := mtlsPair(t, keyServiceServerNames(), keyServiceClientNames(), addr)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	checkClients(t, addr, clientTLS, ca)
}

type noKeys struct{}

func (noKeys) Resolve(context.Context, string) (accesskey.Identity, error) {
	return accesskey.Identity{}, accesskey.ErrUnknownKey
}

// TestExtProcOverMutualTLS: with the extproc-tls files the ext_proc server on TCP serves only
// clients with a certificate from its CA (Envoy's, through the SDS files).
func TestExtProcOverMutualTLS(t *testing.T) {
	ln, err := extproc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort("localhost", port)
	serverTLS, clientTLS, ca := mtlsPair(t, extProcServerNames(), keyServiceClientNames(), ln.Addr().String())
	srv, err := extproc.NewServer(extproc.Options{Keys: noKeys{}, Usage: usage.Discard{}, TLS: serverTLS})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	checkClients(t, addr, clientTLS, ca)
}

// TestControlPlaneRefusesNetworkExtProc: the control plane does not point Envoy at extproc in
// plaintext over the network unless told to.
func TestControlPlaneRefusesNetworkExtProc(t *testing.T) {
	for _, tc := range []struct {
		addr          string
		tls, insecure bool
		ok            bool
	}{
		{"unix:///run/ccproxy/extproc.sock", false, false, true},
		{"127.0.0.1:9002", false, false, true},
		{"[::1]:9002", false, false, true},
		{"10.0.0.7:9002", false, false, false},
		{"10.0.0.7:9002", false, true, true},
		{"10.0.0.7:9002", true, false, true},
		{"10.0.0.7:9002", true, true, false},
		{"unix:///run/ccproxy/extproc.sock", true, false, false},
	} {
		err := checkEnvoyExtProcChannel(tc.addr, tc.tls, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("%s tls=%v insecure=%v: err = %v, want ok=%v", tc.addr, tc.tls, tc.insecure, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--extproc-") {
			t.Errorf("%s: error %q does not name --extproc-insecure", tc.addr, err)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"32MiB": 32 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "0": 0} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "1GB", "32 MiB"} {
		if _, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q): no error", in)
		}
	}
}

// TestCommandsRefusePlaintextOffLoopback: each command stops at start, naming the settings,
// when an internal channel would be plaintext on a non-loopback address.
func TestCommandsRefusePlaintextOffLoopback(t *testing.T) {
	dsn := testenv.Postgres(t)
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("CCPROXY_LOG_FORMAT", "json")
	if _, err := run(t, "migrate", "up"); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 64)
	master := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("m", 32)))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"admin: KeyService on every interface", []string{"admin", "--server-secret", secret, "--master-key", master,
			"--admin-password", "a-long-enough-password", "--admin-addr", "127.0.0.1:0", "--metrics-addr=",
			"--admin-grpc-addr", "0.0.0.0:0"}, "refusing plaintext on the non-loopback address 0.0.0.0:0"},
		{"extproc: KeyService on the network", []string{"extproc", "--server-secret", secret, "--controlplane-insecure=true",
			"--metrics-addr=", "--keyservice-addr", "10.1.2.3:9091"}, "--keyservice-tls-cert"},
		{"extproc: ext_proc on every interface", []string{"extproc", "--server-secret", secret, "--controlplane-insecure=true",
			"--metrics-addr=", "--extproc-addr", "0.0.0.0:0"}, "--extproc-tls-cert"},
		{"controlplane: Envoy to a network extproc", []string{"controlplane", "--xds-insecure=true", "--metrics-addr=",
			"--extproc-addr", "10.0.0.7:9002"}, "--extproc-tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
		})
	}
}
