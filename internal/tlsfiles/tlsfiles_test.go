package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/tlsfiles"
	"github.com/ccproxy/ccproxy/internal/tlsfiles/tlsfilestest"
)

const serverName = "ccproxy-controlplane"

// exchange runs one TLS connection between the two configurations: the server writes "ok" once
// its handshake succeeds, and the client must read it. It returns the client's view of the
// connection, the client's error and the server's handshake error.
func exchange(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			serverErr <- err
			return
		}
		_, err = c.Write([]byte("ok"))
		serverErr <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		return tls.ConnectionState{}, err, <-serverErr
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return c.ConnectionState(), err, <-serverErr
	}
	return c.ConnectionState(), nil, <-serverErr
}

type pki struct {
	ca             *tlsfilestest.CA
	server, client tlsfiles.Files
}

func newPKI(t *testing.T) pki {
	t.Helper()
	ca := tlsfilestest.NewCA(t, "xds-ca")
	sc, sk := ca.Issue(t, []string{serverName}, x509.ExtKeyUsageServerAuth)
	cc, ck := ca.Issue(t, []string{"envoy"}, x509.ExtKeyUsageClientAuth)
	return pki{
		ca:     ca,
		server: tlsfilestest.Write(t, t.TempDir(), sc, sk, ca.PEM),
		client: tlsfilestest.Write(t, t.TempDir(), cc, ck, ca.PEM),
	}
}

func mustServer(t *testing.T, f tlsfiles.Files, onErr func(error)) *tls.Config {
	t.Helper()
	c, err := tlsfiles.ServerConfig(f, onErr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustClient(t *testing.T, f tlsfiles.Files, name string) *tls.Config {
	t.Helper()
	c, err := tlsfiles.ClientConfig(f, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	other := tlsfilestest.NewCA(t, "other-ca")
	oc, ok := other.Issue(t, []string{"envoy"}, x509.ExtKeyUsageClientAuth)
	wrongName, wrongNameKey := p.ca.Issue(t, []string{"elsewhere"}, x509.ExtKeyUsageServerAuth)
	clientUsage, clientUsageKey := p.ca.Issue(t, []string{serverName}, x509.ExtKeyUsageClientAuth)
	loopback, loopbackKey := p.ca.Issue(t, []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth)
	otherIP, otherIPKey := p.ca.Issue(t, []string{"10.0.0.1"}, x509.ExtKeyUsageServerAuth)
	tests := []struct {
		name   string
		server tlsfiles.Files
		client func(t *testing.T) *tls.Config
		ok     bool
	}{
		{"client certificate from the CA", p.server, func(t *testing.T) *tls.Config { return mustClient(t, p.client, serverName) }, true},
		{"no client certificate", p.server, func(t *testing.T) *tls.Config {
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(p.ca.PEM)
			return &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS13}
		}, false},
		{"client certificate from another CA", p.server, func(t *testing.T) *tls.Config {
			return mustClient(t, tlsfilestest.Write(t, t.TempDir(), oc, ok, p.ca.PEM), serverName)
		}, false},
		{"TLS 1.2 client", p.server, func(t *testing.T) *tls.Config {
			c := mustClient(t, p.client, serverName)
			c.MaxVersion = tls.VersionTLS12
			return c
		}, false},
		{"server certificate for another name", tlsfilestest.Write(t, t.TempDir(), wrongName, wrongNameKey, p.ca.PEM), func(t *testing.T) *tls.Config {
			return mustClient(t, p.client, serverName)
		}, false},
		{"server certificate without server authentication usage", tlsfilestest.Write(t, t.TempDir(), clientUsage, clientUsageKey, p.ca.PEM), func(t *testing.T) *tls.Config {
			return mustClient(t, p.client, serverName)
		}, false},
		// exchange dials 127.0.0.1: Go sends no SNI for an IP address, so only the name
		// the client was given can be checked.
		{"IP target without a name: refused, not any certificate of the CA accepted", p.server, func(t *testing.T) *tls.Config {
			return mustClient(t, p.client, "")
		}, false},
		{"IP target, certificate with that IP", tlsfilestest.Write(t, t.TempDir(), loopback, loopbackKey, p.ca.PEM), func(t *testing.T) *tls.Config {
			return mustClient(t, p.client, "127.0.0.1")
		}, true},
		{"IP target, certificate for another IP", tlsfilestest.Write(t, t.TempDir(), otherIP, otherIPKey, p.ca.PEM), func(t *testing.T) *tls.Config {
			return mustClient(t, p.client, "127.0.0.1")
		}, false},
		{"server checked against the CA bundle, not the system roots", p.server, func(t *testing.T) *tls.Config {
			return mustClient(t, tlsfilestest.Write(t, t.TempDir(), oc, ok, other.PEM), serverName)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, clientErr, _ := exchange(t, mustServer(t, tc.server, nil), tc.client(t))
			if tc.ok {
				if clientErr != nil {
					t.Fatalf("client: %v", clientErr)
				}
				if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" {
					t.Errorf("version %x, ALPN %q; want TLS 1.3 and h2", cs.Version, cs.NegotiatedProtocol)
				}
				return
			}
			if clientErr == nil {
				t.Fatal("connection served")
			}
		})
	}
}

// replace rewrites a file the way a Secret update is seen through the mount: new content and a
// new modification time.
func replace(t *testing.T, name string, b []byte, at time.Time) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestReload(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var reloadErrs []error
	server := mustServer(t, p.server, func(err error) {
		mu.Lock()
		reloadErrs = append(reloadErrs, err)
		mu.Unlock()
	})
	client := mustClient(t, p.client, serverName)
	serial := func() string {
		t.Helper()
		cs, err, _ := exchange(t, server, client)
		if err != nil {
			t.Fatal(err)
		}
		return cs.PeerCertificates[0].SerialNumber.String()
	}
	first := serial()

	t.Run("a renewed server certificate is used at the next handshake", func(t *testing.T) {
		c, k := p.ca.Issue(t, []string{serverName}, x509.ExtKeyUsageServerAuth)
		later := time.Now().Add(time.Minute)
		replace(t, p.server.CertFile, c, later)
		replace(t, p.server.KeyFile, k, later)
		if got := serial(); got == first {
			t.Errorf("still serving certificate %s", got)
		}
	})
	t.Run("a broken update keeps the previous certificate and is reported once", func(t *testing.T) {
		before := serial()
		replace(t, p.server.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\ntruncated"), time.Now().Add(2*time.Minute))
		for range 2 {
			if got := serial(); got != before {
				t.Errorf("serving %s after a broken update, want %s", got, before)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(reloadErrs) != 1 || !strings.Contains(reloadErrs[0].Error(), "keeping the previous certificates") {
			t.Errorf("reload errors = %v, want one", reloadErrs)
		}
	})
	t.Run("a rotated CA bundle is trusted without a new configuration", func(t *testing.T) {
		next := tlsfilestest.NewCA(t, "next-ca")
		c, k := next.Issue(t, []string{serverName}, x509.ExtKeyUsageServerAuth)
		srv := mustServer(t, tlsfilestest.Write(t, t.TempDir(), c, k, p.ca.PEM), nil)
		if _, err, _ := exchange(t, srv, client); err == nil {
			t.Fatal("a server from an untrusted CA was accepted")
		}
		replace(t, p.client.CAFile, append(append([]byte{}, p.ca.PEM...), next.PEM...), time.Now().Add(3*time.Minute))
		if _, err, _ := exchange(t, srv, client); err != nil {
			t.Errorf("after the CA bundle gained the new CA: %v", err)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	missing := p.server
	missing.CAFile = p.server.CAFile + ".absent"
	notPEM := p.server
	notPEM.CAFile = p.server.KeyFile
	for _, tc := range []struct {
		name string
		f    tlsfiles.Files
	}{
		{"incomplete", tlsfiles.Files{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile}},
		{"missing file", missing},
		{"CA bundle without a certificate", notPEM},
	} {
		if _, err := tlsfiles.ServerConfig(tc.f, nil); err == nil {
			t.Errorf("%s: ServerConfig succeeded", tc.name)
		}
		if _, err := tlsfiles.ClientConfig(tc.f, "", nil); err == nil {
			t.Errorf("%s: ClientConfig succeeded", tc.name)
		}
	}
	if !p.server.Complete() || (tlsfiles.Files{}).Any() || !(tlsfiles.Files{KeyFile: "k"}).Any() {
		t.Error("Complete/Any")
	}
}
