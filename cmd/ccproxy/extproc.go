package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
)

func newExtProcCommand(p *process) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "extproc",
		Short: "Run the ext_proc sidecar that Envoy calls for every request",
		Long: `Runs the Envoy external processor: it authenticates access keys, chooses each request's
route, passes Plan traffic through untouched and meters usage. Run it beside every Envoy, on a Unix
socket shared with Envoy (--extproc-addr unix:///run/ccproxy/extproc.sock) or on loopback.

Access keys are resolved through an in-process cache, Redis and the admin service's KeyService
(--keyservice-addr); revocations arrive over Redis pub/sub. Usage events are published to a Redis
stream that the admin service ingests into Postgres; while Redis is unreachable they wait in memory
(--usage-buffer). The model list and Bedrock configuration come from the control plane. extproc
holds no database credentials.`,
		Args: cobra.NoArgs,
	}
	s := &extprocSettings{}
	b := p.bind(cmd, s.groups()...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		extproc.TuneRuntime(os.Getenv, os.ReadFile)
		ctx := cmd.Context()
		reg := observability.NewRegistry()
		health := observability.NewHealth()
		rdb, err := redisClient(s.Redis)
		if err != nil {
			return err
		}
		defer rdb.Close()

		var opened closers
		defer opened.closeAll()
		ep, err := newExtProc(ctx, s, log, rdb, reg, &opened)
		if err != nil {
			return err
		}
		log.Info("extproc listening", "addr", s.Sidecar.Addr, "keyservice", s.KeyServiceAddr)
		ep.addHealth(health, rdb)
		opened.handOver()
		return runAll(ctx, log, append(ep.comps, metricsComponent(s.Serving, log, reg, health))...)
	}
	return cmd
}

// extprocSettings are what the ext_proc server reads: the settings of
// `ccproxy extproc`, and the part of `ccproxy dev`'s that it hands to the
// same server (devSettings.extproc).
type extprocSettings struct {
	Redis   config.Redis
	Keys    config.AccessKeys
	Secrets config.Secrets
	Billing config.Billing
	Serving config.Serving
	Sidecar sidecarSettings
	Breaker breakerSettings
	// ControlPlaneAddr is the control plane's xDS address, from which
	// extproc receives its runtime configuration.
	ControlPlaneAddr string
	// ControlPlaneTLS is how extproc authenticates to it.
	ControlPlaneTLS controlPlaneTLSSettings
	// KeyServiceAddr is where extproc reaches the admin service's KeyService.
	KeyServiceAddr string
	// KeyServiceTLS is how extproc authenticates to it.
	KeyServiceTLS channelTLS
	// ExtProcTLS protects the ext_proc server on a TCP address.
	ExtProcTLS channelTLS
	// Telemetry is the OpenTelemetry export (traces).
	Telemetry config.Telemetry
}

func (s *extprocSettings) groups() []config.Group {
	return []config.Group{
		s.Redis.Group(), s.Keys.Group(), s.Secrets.Group(), s.Sidecar.group(), s.ExtProcTLS.group(extProcServerNames()), s.Breaker.group(),
		{Title: "Control plane connection", Settings: []config.Setting{{
			Flag: "controlplane-addr", Env: "CCPROXY_CONTROLPLANE_ADDR", Default: "127.0.0.1:18000",
			Usage: "host:port of the control plane's xDS server, from which extproc receives its Bedrock runtime configuration",
			Set: func(v string) error {
				if err := config.CheckHostPort(v); err != nil {
					return err
				}
				s.ControlPlaneAddr = v
				return nil
			},
		}}},
		s.ControlPlaneTLS.group(),
		{Title: "Key lookups", Settings: []config.Setting{{
			Flag: "keyservice-addr", Env: "CCPROXY_KEYSERVICE_ADDR", Default: "127.0.0.1:9091",
			Usage: "host:port of the admin service's KeyService (CCPROXY_ADMIN_GRPC_ADDR) for access-key lookups; a non-loopback host needs the keyservice-tls files (mutual TLS) or --keyservice-insecure",
			Set: func(v string) error {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return errors.New("must be host:port")
				}
				s.KeyServiceAddr = v
				return nil
			},
		}}},
		s.KeyServiceTLS.group(keyServiceClientNames()),
		s.Billing.Group(), s.Serving.Group(), s.Telemetry.Group(),
	}
}

// sidecarSettings shape the ext_proc server itself.
type sidecarSettings struct {
	// Addr is where extproc listens and where Envoy reaches it.
	Addr string
	// UsageBuffer bounds the usage events extproc keeps in memory while
	// Redis is unreachable.
	UsageBuffer int
	// UsageSpoolDir, when set, holds the write-ahead file of the usage
	// events waiting for Redis, so that they survive the process.
	UsageSpoolDir string
	// KeyCacheTTL bounds how long extproc trusts a resolved access key.
	KeyCacheTTL time.Duration
	// SocketMode and SocketGroup are the Unix socket's permission bits and
	// group (extproc.ListenOptions).
	SocketMode  fs.FileMode
	SocketGroup string
	// KeyMaxConcurrent and MaxRequestBody are the per-key limits
	// (router.Limits).
	KeyMaxConcurrent int
	MaxRequestBody   int64
	// SkipPlanRequestBodies: Plan-alone requests are routed on their
	// headers (router.Config.SkipPlanRequestBodies).
	SkipPlanRequestBodies bool
}

// sidecarTitle is the title of the sidecar's settings, which the control
// plane shares in part: it tells Envoy the address extproc listens on.
const sidecarTitle = "ext_proc sidecar"

func (s *sidecarSettings) group() config.Group {
	return config.Group{Title: sidecarTitle, Settings: []config.Setting{extprocAddrSetting(&s.Addr), {
		Flag: "usage-buffer", Env: "CCPROXY_USAGE_BUFFER", Default: "100000",
		Usage: "usage events extproc keeps in memory while Redis is unreachable; beyond it the oldest are dropped (counted in ccproxy_usage_stream_dropped_total)",
		Set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 10_000_000 {
				return errors.New("must be a number of events from 1 to 10000000")
			}
			s.UsageBuffer = n
			return nil
		},
	}, {
		Flag: "usage-spool-dir", Env: "CCPROXY_USAGE_SPOOL_DIR", Default: "",
		Usage: "directory (one per extproc process, on a disk that survives a restart of the process) where usage events waiting for an unreachable Redis are also written and synced, and published again at the next start; empty keeps them in memory only",
		Set: func(v string) error {
			if v != "" && !filepath.IsAbs(v) {
				return errors.New("must be an absolute path")
			}
			s.UsageSpoolDir = v
			return nil
		},
	}, {
		Flag: "key-cache-ttl", Env: "CCPROXY_KEY_CACHE_TTL", Default: "5s",
		Usage: "how long extproc trusts a resolved access key before asking again (bounds how late a revocation is noticed)",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return errors.New("must be a positive duration such as 5s")
			}
			s.KeyCacheTTL = d
			return nil
		},
	}, {
		Flag: "key-max-concurrent", Env: "CCPROXY_KEY_MAX_CONCURRENT", Default: "64",
		Usage: "requests of one access key that may be in flight through one extproc (one gateway pod) at once; more get a retryable 429 rate_limit_error. Counted per pod, so a key may have this many on every pod. Claude Code runs a handful at a time (more with many sub-agents); 0 disables the limit",
		Set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 100_000 {
				return errors.New("must be a number of requests from 0 (no limit) to 100000")
			}
			s.KeyMaxConcurrent = n
			return nil
		},
	}, {
		Flag: "max-request-body", Env: "CCPROXY_MAX_REQUEST_BODY", Default: "32MiB",
		Usage: "largest request body extproc lets through (bytes, or with a KiB or MiB suffix), at most 50MiB (Envoy's buffer); larger requests get 413 request_too_large. The default is Anthropic's own Messages API limit",
		Set: func(v string) error {
			n, err := parseByteSize(v)
			if err != nil || n < 1024 || n > 50<<20 {
				return errors.New("must be a size from 1KiB to 50MiB, such as 32MiB or 10485760")
			}
			s.MaxRequestBody = n
			return nil
		},
	}, {
		Flag: "plan-request-body", Env: "CCPROXY_PLAN_REQUEST_BODY", Default: "read",
		Usage: "read: extproc reads the body of every Messages request; skip: a request that goes to Plan alone (plan_only users, plan_first users without a Bedrock credential) is routed on its headers and its body never reaches extproc, which costs about a third less CPU per request (docs/performance.md), but the usage rows of Plan's refusals (429, 529, 400) then name no model and say stream=false. Requests of Claude Code releases without x-claude-code-session-id, and those without content-length, are read either way",
		Set: func(v string) error {
			switch v {
			case "read", "skip":
				s.SkipPlanRequestBodies = v == "skip"
				return nil
			}
			return errors.New("must be read or skip")
		},
	}, {
		Flag: "extproc-socket-mode", Env: "CCPROXY_EXTPROC_SOCKET_MODE", Default: "0660",
		Usage: "permission bits (octal) of extproc's Unix socket: whoever may connect can act as Envoy and obtain decrypted Bedrock credentials, so give access to Envoy's user or group only (on Kubernetes, set the pod's fsGroup and CCPROXY_EXTPROC_SOCKET_GROUP to it); the socket's directory must belong to extproc's user or root",
		Set: func(v string) error {
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m&^0o770 != 0 || m&0o600 != 0o600 {
				return errors.New("must be octal permission bits for the owner (read and write) and at most the group, such as 0660 or 0600; other users are never allowed")
			}
			s.SocketMode = fs.FileMode(m)
			return nil
		},
	}, {
		Flag: "extproc-socket-group", Env: "CCPROXY_EXTPROC_SOCKET_GROUP",
		Usage: "group (name or numeric id) given extproc's Unix socket, for Envoy's user to connect through the group bits; empty keeps extproc's own group",
		Set:   func(v string) error { s.SocketGroup = v; return nil },
	}}}
}

// extprocAddrSetting is the ext_proc address: extproc listens there and the
// control plane tells Envoy to connect there.
func extprocAddrSetting(addr *string) config.Setting {
	return config.Setting{
		Flag: "extproc-addr", Env: "CCPROXY_EXTPROC_ADDR", Default: "unix:///run/ccproxy/extproc.sock",
		Usage: "ext_proc gRPC address: unix:///absolute/path (the sidecar's socket, shared with Envoy) or IP:port",
		Set: func(v string) error {
			if p, ok := strings.CutPrefix(v, "unix://"); ok {
				if !strings.HasPrefix(p, "/") {
					return errors.New("a unix socket path must be absolute: unix:///path")
				}
			} else if err := config.CheckHostPort(v); err != nil {
				return errors.New("must be unix:///absolute/path or IP:port")
			}
			*addr = v
			return nil
		},
	}
}

// breakerSettings configure the per-access-key Plan circuit breaker
// (extproc/planbreaker).
type breakerSettings struct {
	// DefaultOpen is how long a 429 without an announced reset, a failed
	// probe, or FailureThreshold failures open the breaker.
	DefaultOpen time.Duration
	// MaxOpen caps the reset a Plan response announces.
	MaxOpen time.Duration
	// FailureThreshold failures within FailureWindow open it.
	FailureThreshold int
	FailureWindow    time.Duration
	// ProbeLease is how long the half-open probe may take before another
	// request gets the probe.
	ProbeLease time.Duration
	// PreemptThreshold is the default pre-emptive failover threshold (a
	// Plan utilization fraction; 0 = off).
	PreemptThreshold float64
}

func (s *breakerSettings) group() config.Group {
	return config.Group{Title: "Plan circuit breaker", Settings: []config.Setting{{
		Flag: "breaker-default-open", Env: "CCPROXY_BREAKER_DEFAULT_OPEN", Default: "60s",
		Usage: "how long an access key's Plan circuit breaker stays open (its plan_first requests go straight to Bedrock) after a Plan 429 that announces no reset, after the failure threshold, or after a failed probe",
		Set:   minDuration(time.Second, &s.DefaultOpen),
	}, {
		Flag: "breaker-max-open", Env: "CCPROXY_BREAKER_MAX_OPEN", Default: "1h",
		Usage: "cap on how long a Plan 429's announced reset (retry-after, anthropic-ratelimit-*-reset) keeps the breaker open; after it one probe request goes to Plan",
		Set:   minDuration(time.Second, &s.MaxOpen),
	}, {
		Flag: "breaker-failure-threshold", Env: "CCPROXY_BREAKER_FAILURE_THRESHOLD", Default: "3",
		Usage: "Plan 5xx/529 answers, connect failures and timeouts within CCPROXY_BREAKER_FAILURE_WINDOW that open an access key's breaker",
		Set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				return errors.New("must be a number from 1 to 1000")
			}
			s.FailureThreshold = n
			return nil
		},
	}, {
		Flag: "breaker-failure-window", Env: "CCPROXY_BREAKER_FAILURE_WINDOW", Default: "60s",
		Usage: "sliding window in which CCPROXY_BREAKER_FAILURE_THRESHOLD failures open the breaker",
		Set:   minDuration(time.Second, &s.FailureWindow),
	}, {
		Flag: "breaker-probe-lease", Env: "CCPROXY_BREAKER_PROBE_LEASE", Default: "30s",
		Usage: "how long the single half-open probe to Plan may take to report before another request becomes the probe",
		Set:   minDuration(time.Second, &s.ProbeLease),
	}, {
		Flag: "preempt-threshold", Env: "CCPROXY_PREEMPT_THRESHOLD", Default: "0",
		Usage: "default pre-emptive failover threshold: a Plan 5-hour or 7-day utilization (a fraction, e.g. 0.95) at which a plan_first user's requests go to Bedrock until the window's announced reset, before Plan refuses them; 0 is off; a user's own threshold wins",
		Set: func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= 0 && f <= 1) {
				return errors.New("must be a fraction from 0 (off) to 1, such as 0.95")
			}
			s.PreemptThreshold = f
			return nil
		},
	}}}
}

// minDuration parses a duration of at least min into dst.
func minDuration(min time.Duration, dst *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < min {
			return fmt.Errorf("must be a duration of at least %s, such as 60s", min)
		}
		*dst = d
		return nil
	}
}

// parseByteSize parses a whole number of bytes with an optional KiB or MiB suffix.
func parseByteSize(v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "MiB"):
		mult, v = 1<<20, strings.TrimSuffix(v, "MiB")
	case strings.HasSuffix(v, "KiB"):
		mult, v = 1<<10, strings.TrimSuffix(v, "KiB")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, errors.New("not a size")
	}
	return n * mult, nil
}
