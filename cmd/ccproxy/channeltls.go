package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/tlsfiles"
)

// channelTLS chooses how one internal gRPC channel (the KeyService, ext_proc over TCP) is
// protected: mutual TLS from PEM files (tlsfiles), or plaintext. Plaintext is what an
// unconfigured channel gets on a loopback address — only processes on the same host can reach
// it — and is refused at start on any other address unless the channel's insecure flag asks
// for it. Unlike xDS, whose default address is the network, these channels default to
// loopback, so a plain start on one host needs no certificates.
type channelTLS struct {
	// Files are this side's certificate and key and the CA bundle the peer's must chain to.
	Files tlsfiles.Files
	// Insecure allows plaintext on a non-loopback address (development).
	Insecure bool
}

// channelNames names one side of a channel for its settings and messages.
type channelNames struct {
	what   string // "the KeyService", in messages
	flag   string // flag prefix: "admin-grpc" gives --admin-grpc-tls-cert
	env    string // variable prefix: "CCPROXY_ADMIN_GRPC" gives CCPROXY_ADMIN_GRPC_TLS_CERT
	server bool   // the CA setting is -tls-client-ca (server) or -tls-ca (client)
	title  string // settings group title
	cert   string // Usage of the certificate setting
	ca     string // Usage of the CA setting
	// insecure is the Usage of the insecure setting; "" gives a generic one.
	insecure string
}

func (n channelNames) caFlag() (flag, env string) {
	if n.server {
		return n.flag + "-tls-client-ca", n.env + "_TLS_CLIENT_CA"
	}
	return n.flag + "-tls-ca", n.env + "_TLS_CA"
}

func (n channelNames) filesName() string {
	caFlag, caEnv := n.caFlag()
	return fmt.Sprintf("--%s-tls-cert, --%s-tls-key and --%s (%s_TLS_CERT, %s_TLS_KEY, %s)",
		n.flag, n.flag, caFlag, n.env, n.env, caEnv)
}

func (n channelNames) insecureUsage() string {
	if n.insecure != "" {
		return n.insecure
	}
	return "allow " + n.what + " in plaintext on a non-loopback address, for development only; without TLS files a non-loopback address is refused at start (loopback is always allowed)"
}

func (n channelNames) insecureName() string {
	return fmt.Sprintf("--%s-insecure (%s_INSECURE=true)", n.flag, n.env)
}

func (c *channelTLS) group(n channelNames) config.Group {
	caFlag, caEnv := n.caFlag()
	return config.Group{Title: n.title, Settings: []config.Setting{{
		Flag: n.flag + "-tls-cert", Env: n.env + "_TLS_CERT", Usage: n.cert,
		Set: func(v string) error { c.Files.CertFile = v; return nil },
	}, {
		Flag: n.flag + "-tls-key", Env: n.env + "_TLS_KEY",
		Usage: "PEM private key of that certificate (tls.key); re-read when it changes",
		Set:   func(v string) error { c.Files.KeyFile = v; return nil },
	}, {
		Flag: caFlag, Env: caEnv, Usage: n.ca,
		Set: func(v string) error { c.Files.CAFile = v; return nil },
	}, boolSetting(n.flag+"-insecure", n.env+"_INSECURE", n.insecureUsage(), &c.Insecure)}}
}

// check validates the choice for addr (host:port; "" for a Unix socket, which never uses
// TLS) and reports whether TLS is used.
func (c channelTLS) check(n channelNames, addr string) (bool, error) {
	switch {
	case c.Insecure && c.Files.Any():
		return false, fmt.Errorf("%s and %s contradict each other: choose TLS or plaintext", n.insecureName(), n.filesName())
	case c.Files.Any() && !c.Files.Complete():
		return false, fmt.Errorf("%s: set all three of %s", n.what, n.filesName())
	case c.Files.Complete() && addr == "":
		return false, fmt.Errorf("%s: %s apply to TCP addresses only; a Unix socket is protected by its file mode", n.what, n.filesName())
	case c.Files.Complete():
		return true, nil
	case addr == "" || c.Insecure || isLoopback(addr):
		return false, nil
	}
	return false, fmt.Errorf("%s: refusing plaintext on the non-loopback address %s (anyone on the network could use it): set %s for mutual TLS, bind a loopback address, or set %s for development",
		n.what, addr, n.filesName(), n.insecureName())
}

// serverTLS is the server side's configuration for addr, or nil for plaintext.
func (c channelTLS) serverTLS(n channelNames, addr string, log *slog.Logger) (*tls.Config, error) {
	useTLS, err := c.check(n, addr)
	if err != nil || !useTLS {
		return nil, err
	}
	return tlsfiles.ServerConfig(c.Files, reloadLogger(log, n.flag))
}

// clientTLS is the client side's configuration for addr, or nil for plaintext. The server's
// certificate must carry addr's host.
func (c channelTLS) clientTLS(n channelNames, addr string, log *slog.Logger) (*tls.Config, error) {
	useTLS, err := c.check(n, addr)
	if err != nil || !useTLS {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.what, err)
	}
	return tlsfiles.ClientConfig(c.Files, host, reloadLogger(log, n.flag))
}

// isLoopback reports whether host:port names this host only: a loopback IP or "localhost".
// An unspecified address (0.0.0.0, ::, an empty host) listens on every interface and is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// keyServiceServerNames names a side of an internal channel.
func keyServiceServerNames() channelNames {
	return channelNames{
		what: "the KeyService", flag: "admin-grpc", env: "CCPROXY_ADMIN_GRPC", server: true,
		title: "KeyService security",
		cert:  "PEM certificate chain the KeyService presents to extproc (tls.crt), with the DNS name or IP extproc connects to (CCPROXY_KEYSERVICE_ADDR's host); re-read when it changes",
		ca:    "PEM CA bundle that extproc's client certificate must chain to (ca.crt); a client without one is refused in the TLS handshake",
	}
}

// keyServiceClientNames names a side of an internal channel.
func keyServiceClientNames() channelNames {
	return channelNames{
		what: "the KeyService client", flag: "keyservice", env: "CCPROXY_KEYSERVICE",
		title: "Key lookup security",
		cert:  "PEM client certificate extproc presents to the KeyService (tls.crt); re-read when it changes",
		ca:    "PEM CA bundle the KeyService's certificate must chain to (ca.crt); the certificate must also carry the host of CCPROXY_KEYSERVICE_ADDR",
	}
}

// extProcServerNames names a side of an internal channel.
func extProcServerNames() channelNames {
	return channelNames{
		what: "the ext_proc server", flag: "extproc", env: "CCPROXY_EXTPROC", server: true,
		title:    "ext_proc sidecar security",
		cert:     "PEM certificate chain extproc presents to Envoy on a TCP CCPROXY_EXTPROC_ADDR (tls.crt), with the DNS name ccproxy-extproc that Envoy checks; re-read when it changes",
		ca:       "PEM CA bundle that Envoy's client certificate must chain to (ca.crt); a client without one is refused in the TLS handshake",
		insecure: extProcInsecureUsage,
	}
}

// extProcInsecureUsage is the usage of --extproc-insecure, which both ends of the ext_proc
// channel (extproc and the control plane configuring Envoy) read.
const extProcInsecureUsage = "allow plaintext between Envoy and extproc on a non-loopback TCP CCPROXY_EXTPROC_ADDR, for development only; otherwise extproc needs the extproc-tls files and the control plane --extproc-tls (a Unix socket or a loopback address need neither)"
