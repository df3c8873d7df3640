package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/tlsfiles"
)

// xdsTLSSettings choose how the control plane's xDS server authenticates itself and its
// clients: mutual TLS from files (a mounted Kubernetes Secret), or plaintext when asked for.
type xdsTLSSettings struct {
	// CertFile and KeyFile are the xDS server's certificate and key.
	CertFile, KeyFile string
	// ClientCAFile is the bundle client certificates must chain to.
	ClientCAFile string
	// Insecure serves plaintext to any client (development).
	Insecure bool
}

func (s *xdsTLSSettings) group() config.Group {
	return config.Group{Title: "xDS security", Settings: []config.Setting{{
		Flag: "xds-tls-cert", Env: "CCPROXY_XDS_TLS_CERT",
		Usage: "PEM certificate chain the xDS server presents (e.g. a mounted Secret's tls.crt, with the DNS name Envoy checks: ccproxy-controlplane); re-read when it changes",
		Set:   func(v string) error { s.CertFile = v; return nil },
	}, {
		Flag: "xds-tls-key", Env: "CCPROXY_XDS_TLS_KEY",
		Usage: "PEM private key of the xDS server certificate (tls.key); re-read when it changes",
		Set:   func(v string) error { s.KeyFile = v; return nil },
	}, {
		Flag: "xds-tls-client-ca", Env: "CCPROXY_XDS_TLS_CLIENT_CA",
		Usage: "PEM CA bundle that xDS clients' certificates (Envoy's, extproc's) must chain to (ca.crt); a client without one is refused in the TLS handshake",
		Set:   func(v string) error { s.ClientCAFile = v; return nil },
	}, boolSetting("xds-insecure", "CCPROXY_XDS_INSECURE",
		"serve xDS in plaintext to any client, for development only; otherwise the three xds-tls files are required", &s.Insecure)}}
}

// serverTLS is the xDS server's mutual-TLS configuration, or nil for plaintext, which only
// --xds-insecure gives: a control plane that fell back to plaintext would serve every gateway's
// configuration to anyone who reaches its port, and accept any client.
func (s xdsTLSSettings) serverTLS(log *slog.Logger) (*tls.Config, error) {
	files := tlsfiles.Files{CertFile: s.CertFile, KeyFile: s.KeyFile, CAFile: s.ClientCAFile}
	if err := checkTLSChoice(files, s.Insecure, "xds-tls-cert, --xds-tls-key and --xds-tls-client-ca (CCPROXY_XDS_TLS_CERT, _KEY, _CLIENT_CA)", "xds-insecure (CCPROXY_XDS_INSECURE=true)"); err != nil {
		return nil, err
	}
	if s.Insecure {
		return nil, nil
	}
	return tlsfiles.ServerConfig(files, reloadLogger(log, "xds server"))
}

// controlPlaneTLSSettings choose how extproc authenticates to the control plane: mutual TLS
// from files, or plaintext when asked for.
type controlPlaneTLSSettings struct {
	// CertFile and KeyFile are extproc's client certificate and key.
	CertFile, KeyFile string
	// CAFile is the bundle the control plane's certificate must chain to.
	CAFile string
	// Insecure connects in plaintext (development).
	Insecure bool
}

func (s *controlPlaneTLSSettings) group() config.Group {
	return config.Group{Title: "Control-plane security", Settings: []config.Setting{{
		Flag: "controlplane-tls-cert", Env: "CCPROXY_CONTROLPLANE_TLS_CERT",
		Usage: "PEM client certificate extproc presents to the control plane (tls.crt); re-read when it changes",
		Set:   func(v string) error { s.CertFile = v; return nil },
	}, {
		Flag: "controlplane-tls-key", Env: "CCPROXY_CONTROLPLANE_TLS_KEY",
		Usage: "PEM private key of the client certificate (tls.key); re-read when it changes",
		Set:   func(v string) error { s.KeyFile = v; return nil },
	}, {
		Flag: "controlplane-tls-ca", Env: "CCPROXY_CONTROLPLANE_TLS_CA",
		Usage: "PEM CA bundle the control plane's certificate must chain to (ca.crt); the certificate must also carry the host of the control-plane address",
		Set:   func(v string) error { s.CAFile = v; return nil },
	}, boolSetting("controlplane-insecure", "CCPROXY_CONTROLPLANE_INSECURE",
		"connect to the control plane in plaintext, for development only; otherwise the three controlplane-tls files are required", &s.Insecure)}}
}

// clientTLS is extproc's mutual-TLS configuration for the control plane at addr (host:port;
// the certificate must carry the host), or nil for plaintext, which only
// --controlplane-insecure gives.
func (s controlPlaneTLSSettings) clientTLS(addr string, log *slog.Logger) (*tls.Config, error) {
	files := tlsfiles.Files{CertFile: s.CertFile, KeyFile: s.KeyFile, CAFile: s.CAFile}
	if err := checkTLSChoice(files, s.Insecure, "controlplane-tls-cert, --controlplane-tls-key and --controlplane-tls-ca (CCPROXY_CONTROLPLANE_TLS_CERT, _KEY, _CA)", "controlplane-insecure (CCPROXY_CONTROLPLANE_INSECURE=true)"); err != nil {
		return nil, err
	}
	if s.Insecure {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("control plane address %q: %w", addr, err)
	}
	return tlsfiles.ClientConfig(files, host, reloadLogger(log, "control plane client"))
}

// checkTLSChoice insists on exactly one of mutual TLS (all three files) and explicit plaintext.
func checkTLSChoice(files tlsfiles.Files, insecure bool, filesName, insecureName string) error {
	switch {
	case insecure && files.Any():
		return fmt.Errorf("--%s and --%s contradict each other: choose TLS or plaintext", insecureName, filesName)
	case !insecure && !files.Complete():
		return fmt.Errorf("xDS needs mutual TLS: set --%s, or --%s for development", filesName, insecureName)
	}
	return nil
}

func reloadLogger(log *slog.Logger, who string) func(error) {
	return func(err error) {
		log.Error("TLS files changed but do not load; the previous certificates stay in use", "tls", who, "err", err)
	}
}

// boolSetting is a true/false setting, false by default.
func boolSetting(flag, env, usage string, dst *bool) config.Setting {
	return config.Setting{
		Flag: flag, Env: env, Default: "false", Usage: usage,
		Set: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			*dst = b
			return nil
		},
	}
}
