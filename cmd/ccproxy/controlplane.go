package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

func newControlPlaneCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve Envoy's configuration (listeners, routes, clusters) over xDS",
		Long: `Runs the xDS control plane: Envoy connects to it over ADS (see envoy/bootstrap.yaml) and receives
the gateway's listener, routes and clusters with the production settings ccproxy needs, and extproc
receives its Bedrock runtime configuration (model mappings, regions) from the same server.

The Bedrock part comes from Postgres: one cluster and route per region of the Bedrock credentials in
use, and the enabled model mappings. Changes are picked up as they are committed (LISTEN/NOTIFY).

xDS is served over mutual TLS (--xds-tls-cert, --xds-tls-key, --xds-tls-client-ca): a client without
a certificate from the client CA is refused, and so is an Envoy older than 1.37. --xds-insecure
serves plaintext instead, for development.`,
		Args: cobra.NoArgs,
	}
	s := &controlplaneSettings{}
	b := p.bind(cmd, s.groups()...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		serverTLS, err := s.XDSTLS.serverTLS(log)
		if err != nil {
			return err
		}
		if err := checkEnvoyExtProcChannel(s.ExtProcAddr, s.ExtProcTLS, s.ExtProcInsecure); err != nil {
			return err
		}
		st, err := store.Open(ctx, s.Postgres.URL)
		if err != nil {
			return err
		}
		defer st.Close()
		cpLog := log.With("component", "controlplane")
		base := controlPlaneOptions(s.DataPlane, s.ExtProcAddr)
		if s.ExtProcTLS {
			base.ExtProcTLS = &controlplane.ExtProcTLS{}
		}
		// Start from the database's configuration: serving a snapshot without the Bedrock
		// clusters first would make every connected Envoy drop them on a restart.
		opts, err := controlplane.DatabaseOptions(ctx, st, base, cpLog)
		if err != nil {
			return err
		}
		reg := observability.NewRegistry()
		srv, err := controlplane.NewServer(opts, cpLog, reg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", s.XDSAddr)
		if err != nil {
			return fmt.Errorf("xds: listen on %s (--xds-addr / CCPROXY_XDS_ADDR): %w", s.XDSAddr, err)
		}
		// No Postgres readiness check: while the database is away the last configuration is
		// still served, and Envoys must keep reaching this server.
		health := observability.NewHealth()
		log.Info("serving xDS", "addr", ln.Addr().String(), "version", srv.Version(), "bedrock_regions", opts.BedrockRegions)
		return runAll(ctx, log,
			component{"xds", func(ctx context.Context) error {
				if serverTLS == nil {
					return srv.Serve(ctx, ln)
				}
				return srv.ServeTLS(ctx, ln, serverTLS)
			}},
			component{"database", func(ctx context.Context) error {
				return controlplane.WatchDatabase(ctx, st, base, srv, cpLog)
			}},
			metricsComponent(s.Serving, log, reg, health))
	}
	return cmd
}

// controlplaneSettings are the settings of `ccproxy controlplane`.
type controlplaneSettings struct {
	Postgres  config.Postgres
	Serving   config.Serving
	DataPlane dataPlaneSettings
	// XDSAddr is where the control plane serves xDS.
	XDSAddr string
	// XDSTLS is how it authenticates itself and its clients.
	XDSTLS xdsTLSSettings
	// ExtProcAddr is where Envoy reaches extproc.
	ExtProcAddr string
	// ExtProcInsecure allows Envoy to reach extproc in plaintext on a
	// non-loopback TCP address.
	ExtProcInsecure bool
	// ExtProcTLS makes Envoy reach a TCP extproc over mutual TLS.
	ExtProcTLS bool
}

func (s *controlplaneSettings) groups() []config.Group {
	return []config.Group{
		xdsGroup(&s.XDSAddr), s.XDSTLS.group(), s.DataPlane.group(),
		{Title: sidecarTitle, Settings: []config.Setting{extprocAddrSetting(&s.ExtProcAddr)}},
		{Title: extProcServerNames().title, Settings: []config.Setting{
			boolSetting("extproc-tls", "CCPROXY_EXTPROC_TLS",
				"Envoy reaches a TCP CCPROXY_EXTPROC_ADDR over mutual TLS, with its client certificate and the CA bundle from the SDS files /etc/envoy/sds/extproc-client-certificate.yaml and extproc-trusted-ca.yaml (envoy/sds/), accepting only a certificate for ccproxy-extproc; extproc needs the extproc-tls files", &s.ExtProcTLS),
			boolSetting("extproc-insecure", "CCPROXY_EXTPROC_INSECURE", extProcInsecureUsage, &s.ExtProcInsecure)}},
		s.Postgres.Group(), s.Serving.Group(),
	}
}

// xdsGroup is the address of the control plane's xDS server.
func xdsGroup(addr *string) config.Group {
	return config.Group{Title: "xDS", Settings: []config.Setting{{
		Flag: "xds-addr", Env: "CCPROXY_XDS_ADDR", Default: "0.0.0.0:18000",
		Usage: "address of the control plane's xDS (ADS) gRPC server that Envoy connects to",
		Set: func(v string) error {
			if err := config.CheckHostPort(v); err != nil {
				return err
			}
			*addr = v
			return nil
		},
	}}}
}

// dataPlaneSettings shape the gateway's traffic: where it listens and which
// upstreams it calls. The control plane puts them into Envoy's
// configuration (envoysim's, in dev).
type dataPlaneSettings struct {
	// ListenAddr is the address of the gateway's HTTP listener.
	ListenAddr string
	// AnthropicURL is the Plan upstream.
	AnthropicURL string
	// BedrockURL is the Bedrock runtime endpoint template; {region} in the
	// host is replaced by each region in use (controlplane.Options.BedrockURL).
	BedrockURL string
	// BedrockProfileRule lets extproc guess "<geo>.anthropic.<model>" for a
	// Claude model without a mapping (a flagged last resort; off by default).
	BedrockProfileRule bool
	// UpstreamCAFile is the CA bundle upstream certificates are verified against.
	UpstreamCAFile string
	// UpstreamMessageTimeout is the upstream ext_proc filter's message timeout
	// (controlplane.Options.UpstreamExtProcMessageTimeout).
	UpstreamMessageTimeout time.Duration
}

func (s *dataPlaneSettings) group() config.Group {
	return config.Group{Title: "Data plane", Settings: []config.Setting{{
		Flag: "listen-addr", Env: "CCPROXY_LISTEN_ADDR", Default: "0.0.0.0:8080",
		Usage: "address (IP:port) of the gateway's HTTP listener that Claude Code connects to",
		Set: func(v string) error {
			if err := config.CheckHostPort(v); err != nil {
				return err
			}
			s.ListenAddr = v
			return nil
		},
	}, {
		Flag: "anthropic-url", Env: "CCPROXY_ANTHROPIC_URL", Default: "https://api.anthropic.com",
		Usage: "Anthropic API (Plan) base URL, scheme://host[:port]; http:// only for tests and private endpoints",
		Set: func(v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return errors.New("must be http(s)://host[:port] without a path")
			}
			s.AnthropicURL = strings.TrimSuffix(v, "/")
			return nil
		},
	}, {
		Flag: "bedrock-url", Env: "CCPROXY_BEDROCK_URL", Default: "https://bedrock-runtime.{region}.amazonaws.com",
		Usage: "Bedrock runtime endpoint, scheme://host[:port] where {region} in the host is replaced by each AWS region in use (VPC endpoints, FIPS); http:// only for tests",
		Set: func(v string) error {
			u, err := url.Parse(strings.ReplaceAll(v, "{region}", "us-east-1"))
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(u.Host, "{}") {
				return errors.New("must be http(s)://host[:port] without a path; {region} may appear in the host")
			}
			s.BedrockURL = strings.TrimSuffix(v, "/")
			return nil
		},
	}, {
		Flag: "bedrock-profile-rule", Env: "CCPROXY_BEDROCK_PROFILE_RULE", Default: "false",
		Usage: "invoke a Claude model without a model mapping as <geo profile>.anthropic.<model> (a guess that may not exist on Bedrock; each use is logged and counted) instead of refusing it",
		Set: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			s.BedrockProfileRule = b
			return nil
		},
	}, {
		Flag: "upstream-ca-file", Env: "CCPROXY_UPSTREAM_CA_FILE", Default: "/etc/ssl/certs/ca-certificates.crt",
		Usage: "PEM bundle that upstream (Anthropic, Bedrock) certificates are verified against",
		Set:   func(v string) error { s.UpstreamCAFile = v; return nil },
	}, {
		Flag: "upstream-message-timeout", Env: "CCPROXY_UPSTREAM_MESSAGE_TIMEOUT", Default: "10s",
		Usage: "message timeout of the Bedrock and fallback clusters' upstream ext_proc filter: how long an attempt waits for the upstream processor, and so the longest a failed upstream processor can keep Claude Code waiting; keep it above the 5 s signing bound (1s to 2m, whole milliseconds)",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > controlplane.DefaultExtProcMaxMessageTimeout || d%time.Millisecond != 0 {
				return errors.New("must be a duration from 1s to 2m in whole milliseconds, e.g. 10s")
			}
			s.UpstreamMessageTimeout = d
			return nil
		},
	}}}
}

// controlPlaneOptions is the part of the control plane's options that comes from settings;
// the Bedrock regions and model mappings come from the database (controlplane.DatabaseOptions).
func controlPlaneOptions(dp dataPlaneSettings, extprocAddr string) controlplane.Options {
	return controlplane.Options{
		ListenAddress:                 dp.ListenAddr,
		ExtProcAddress:                extprocAddr,
		AnthropicURL:                  dp.AnthropicURL,
		UpstreamCAFile:                dp.UpstreamCAFile,
		BedrockURL:                    dp.BedrockURL,
		Bedrock:                       &runtimev1.BedrockConfig{ProfileRuleFallback: dp.BedrockProfileRule},
		UpstreamExtProcMessageTimeout: dp.UpstreamMessageTimeout,
	}.WithDefaults()
}

// checkEnvoyExtProcChannel refuses to configure Envoy to reach extproc in plaintext on a
// non-loopback TCP address: whoever can reach that address could connect to extproc as Envoy
// does, or answer Envoy in extproc's place. Such an address needs --extproc-tls (mutual TLS)
// or --extproc-insecure; TLS on a Unix socket is refused by the control plane's options.
func checkEnvoyExtProcChannel(addr string, useTLS, insecure bool) error {
	switch {
	case useTLS && insecure:
		return errors.New("--extproc-tls and --extproc-insecure contradict each other: choose TLS or plaintext")
	case useTLS && strings.HasPrefix(addr, "unix:"):
		return fmt.Errorf("--extproc-tls applies to a TCP ext_proc address, not the Unix socket %s", addr)
	case useTLS || strings.HasPrefix(addr, "unix:") || insecure || isLoopback(strings.TrimPrefix(addr, "tcp://")):
		return nil
	}
	return fmt.Errorf("the ext_proc sidecar address %s is neither a Unix socket nor loopback: set --extproc-tls (CCPROXY_EXTPROC_TLS=true) for mutual TLS, use unix:///run/ccproxy/extproc.sock or a loopback address, or set --extproc-insecure (CCPROXY_EXTPROC_INSECURE=true) for development", addr)
}
