// Package config owns ccproxy's runtime settings: their names, defaults,
// documentation and validation. Every setting can be given as a command-line
// flag or as an environment variable (CCPROXY_*, plus the conventional
// DATABASE_URL and REDIS_URL); a flag wins over the environment. Commands
// declare which settings they use, so `ccproxy <command> --help` lists exactly
// those, and Load reports the first bad value by its flag and variable name.
package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ccproxy/ccproxy/internal/billing"
)

// Config is the union of every setting. A command only reads the fields of
// the settings it bound; the others keep their zero value or default.
type Config struct {
	// DatabaseURL is the Postgres connection URL.
	DatabaseURL string
	// RedisURL is the Redis connection URL.
	RedisURL string

	// LogFormat is json, text or auto (text on a terminal, else json).
	LogFormat string
	// LogLevel is the minimum level logged.
	LogLevel slog.Level

	// ServerSecret keys the HMAC under which access keys are stored.
	ServerSecret []byte
	// MasterKey is the local AES-256 master key for stored secrets.
	MasterKey []byte
	// KMSKeyID selects AWS KMS envelope encryption when set.
	KMSKeyID string
	// ControlPlaneAddr is the control plane's xDS address, for extproc.
	ControlPlaneAddr string
	// KMSEndpoint overrides the KMS API endpoint (tests, VPC endpoints).
	KMSEndpoint string

	// MetricsAddr is where /metrics, /healthz and /readyz are served; empty disables.
	MetricsAddr string
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration

	// ListenAddr is the address of the gateway's HTTP listener (Envoy's, or
	// envoysim's in dev).
	ListenAddr string
	// AnthropicURL is the Plan upstream.
	AnthropicURL string
	// BedrockURL is the Bedrock runtime endpoint template; {region} in the host is replaced
	// by each region in use (controlplane.Options.BedrockURL).
	BedrockURL string
	// BedrockProfileRule lets extproc guess "<geo>.anthropic.<model>" for a Claude model
	// without a mapping (a flagged last resort; off by default).
	BedrockProfileRule bool
	// UpstreamCAFile is the CA bundle upstream certificates are verified against.
	UpstreamCAFile string
	// XDSAddr is where the control plane serves xDS (and where dev's envoysim connects).
	XDSAddr string
	// ExtProcAddr is where extproc listens and where Envoy reaches it.
	ExtProcAddr string
	// KeyCacheTTL bounds how long extproc trusts a resolved access key.
	KeyCacheTTL time.Duration
	// DevStateDir keeps `ccproxy dev`'s generated secrets and demo key.
	DevStateDir string
	// DevResolve maps an upstream host:port (lower case) to the ip:port that `ccproxy dev`'s
	// envoysim dials instead, like curl --resolve; nil when unset.
	DevResolve map[string]string

	// RedisPrefix starts every Redis key and channel ccproxy uses.
	RedisPrefix string
	// AdminAddr is where the admin REST API listens.
	AdminAddr string
	// AdminGRPCAddr is where the admin service's internal KeyService listens.
	AdminGRPCAddr string
	// KeyServiceAddr is where extproc reaches the KeyService.
	KeyServiceAddr string
	// AdminUsername and AdminPassword create the first admin when none exists.
	AdminUsername string
	AdminPassword string
	// UsageRetentionMonths is how many whole months of raw usage events the
	// admin service keeps before the current month; 0 keeps them forever.
	UsageRetentionMonths int
	// CloudWatchEMF is where usage metrics are written in CloudWatch's
	// embedded metric format: "off" or "stdout".
	CloudWatchEMF string

	// BillingLocation is the time zone of billing months (budgets, monthly
	// spend); nil means UTC.
	BillingLocation *time.Location
	// UsageBuffer bounds the usage events extproc keeps in memory while
	// Redis is unreachable.
	UsageBuffer int
	// UsageClaimIdle is how long a usage stream entry may stay unacknowledged
	// by a consumer before another admin replica takes it over.
	UsageClaimIdle time.Duration

	// Breaker configures the per-access-key Plan circuit breaker.
	Breaker BreakerSettings
}

// BreakerSettings configure the per-access-key Plan circuit breaker
// (extproc/planbreaker).
type BreakerSettings struct {
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
}

// Setting describes one configuration value.
type Setting struct {
	// Flag is the command-line flag name, without dashes.
	Flag string
	// Env is the environment variable name.
	Env string
	// Default is the value used when neither flag nor variable is set.
	Default string
	// Usage is the one-line description shown in --help and the docs.
	Usage string
	// Secret values are never printed, not even in error messages.
	Secret bool
	// Required settings must be non-empty after defaults.
	Required bool
	// emptyOK skips apply for an empty value: the command fills the field in
	// itself (see WithDefault).
	emptyOK bool
	// apply parses v into c; an error explains what a valid value looks like.
	apply func(c *Config, v string) error
}

// Name returns how the setting is referred to in messages: flag and variable.
func (s Setting) Name() string { return "--" + s.Flag + " / " + s.Env }

// The settings come in groups, one function per group, named after what
// they configure. Later components add their own groups here (and to All)
// so that docs/configuration.md stays complete.

// Database returns the Postgres connection setting.
func Database() []Setting {
	return []Setting{{
		Flag: "database-url", Env: "DATABASE_URL",
		Default: "postgres://postgres@127.0.0.1:5432/ccproxy?sslmode=disable",
		Usage:   "Postgres connection URL (postgres://user:pass@host:port/db?sslmode=…)",
		apply: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
				return errors.New("must be a postgres:// URL with a host")
			}
			c.DatabaseURL = v
			return nil
		},
	}}
}

// Redis returns the Redis connection setting.
func Redis() []Setting {
	return []Setting{{
		Flag: "redis-url", Env: "REDIS_URL",
		Default: "redis://127.0.0.1:6379/0",
		Usage:   "Redis connection URL (redis:// or rediss://)",
		apply: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
				return errors.New("must be a redis://, rediss:// or unix:// URL")
			}
			c.RedisURL = v
			return nil
		},
	}}
}

// Logging returns the log output settings; every command has them.
func Logging() []Setting {
	return []Setting{{
		Flag: "log-format", Env: "CCPROXY_LOG_FORMAT", Default: "auto",
		Usage: "log format: json, text, or auto (text on a terminal, json otherwise)",
		apply: func(c *Config, v string) error {
			switch v {
			case "json", "text", "auto":
				c.LogFormat = v
				return nil
			}
			return errors.New("must be json, text or auto")
		},
	}, {
		Flag: "log-level", Env: "CCPROXY_LOG_LEVEL", Default: "info",
		Usage: "minimum log level: debug, info, warn or error",
		apply: func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(v))
		},
	}}
}

// Keys returns the secret that access keys are hashed with.
func Keys() []Setting {
	return []Setting{{
		Flag: "server-secret", Env: "CCPROXY_SERVER_SECRET", Secret: true, Required: true,
		Usage: "secret (≥ 32 bytes; base64, hex or raw text) keying the HMAC of stored access keys; changing it invalidates every key",
		apply: func(c *Config, v string) error {
			b := decodeSecret(v)
			if len(b) < 32 {
				return errors.New("must be at least 32 bytes (e.g. `openssl rand -base64 32`)")
			}
			c.ServerSecret = b
			return nil
		},
	}}
}

// Secrets returns the settings that select how stored secrets (Bedrock API keys) are encrypted.
func Secrets() []Setting {
	return []Setting{{
		Flag: "master-key", Env: "CCPROXY_MASTER_KEY", Secret: true,
		Usage: "local AES-256 master key for stored secrets: 32 bytes as base64 or hex; required unless --kms-key-id is set",
		apply: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			b, err := decodeKey32(v)
			if err != nil {
				return err
			}
			c.MasterKey = b
			return nil
		},
	}, {
		Flag: "kms-key-id", Env: "CCPROXY_KMS_KEY_ID",
		Usage: "AWS KMS key id or ARN; when set, stored secrets use KMS envelope encryption (AWS credentials and region from the default chain)",
		apply: func(c *Config, v string) error { c.KMSKeyID = v; return nil },
	}, {
		Flag: "kms-endpoint", Env: "CCPROXY_KMS_ENDPOINT",
		Usage: "override the KMS API endpoint URL (VPC endpoints, tests)",
		apply: func(c *Config, v string) error {
			if v != "" {
				if u, err := url.Parse(v); err != nil || u.Scheme == "" || u.Host == "" {
					return errors.New("must be an absolute URL")
				}
			}
			c.KMSEndpoint = v
			return nil
		},
	}}
}

// Serving returns the settings of every long-running component.
func Serving() []Setting {
	return []Setting{{
		Flag: "metrics-addr", Env: "CCPROXY_METRICS_ADDR", Default: "127.0.0.1:9090",
		Usage: "address for Prometheus /metrics and the /healthz and /readyz probes; empty disables",
		apply: func(c *Config, v string) error {
			if v != "" {
				if err := checkHostPort(v); err != nil {
					return err
				}
			}
			c.MetricsAddr = v
			return nil
		},
	}, {
		Flag: "shutdown-timeout", Env: "CCPROXY_SHUTDOWN_TIMEOUT", Default: "30s",
		Usage: "how long to wait for in-flight work on shutdown",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return errors.New("must be a positive duration such as 30s")
			}
			c.ShutdownTimeout = d
			return nil
		},
	}}
}

// DataPlane returns the settings that shape the gateway's traffic: where it
// listens and which upstreams it calls.
func DataPlane() []Setting {
	return []Setting{{
		Flag: "listen-addr", Env: "CCPROXY_LISTEN_ADDR", Default: "0.0.0.0:8080",
		Usage: "address (IP:port) of the gateway's HTTP listener that Claude Code connects to",
		apply: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.ListenAddr = v
			return nil
		},
	}, {
		Flag: "anthropic-url", Env: "CCPROXY_ANTHROPIC_URL", Default: "https://api.anthropic.com",
		Usage: "Anthropic API (Plan) base URL, scheme://host[:port]; http:// only for tests and private endpoints",
		apply: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return errors.New("must be http(s)://host[:port] without a path")
			}
			c.AnthropicURL = strings.TrimSuffix(v, "/")
			return nil
		},
	}, {
		Flag: "bedrock-url", Env: "CCPROXY_BEDROCK_URL", Default: "https://bedrock-runtime.{region}.amazonaws.com",
		Usage: "Bedrock runtime endpoint, scheme://host[:port] where {region} in the host is replaced by each AWS region in use (VPC endpoints, FIPS); http:// only for tests",
		apply: func(c *Config, v string) error {
			u, err := url.Parse(strings.ReplaceAll(v, "{region}", "us-east-1"))
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil ||
				(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(u.Host, "{}") {
				return errors.New("must be http(s)://host[:port] without a path; {region} may appear in the host")
			}
			c.BedrockURL = strings.TrimSuffix(v, "/")
			return nil
		},
	}, {
		Flag: "bedrock-profile-rule", Env: "CCPROXY_BEDROCK_PROFILE_RULE", Default: "false",
		Usage: "invoke a Claude model without a model mapping as <geo profile>.anthropic.<model> (a guess that may not exist on Bedrock; each use is logged and counted) instead of refusing it",
		apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			c.BedrockProfileRule = b
			return nil
		},
	}, {
		Flag: "upstream-ca-file", Env: "CCPROXY_UPSTREAM_CA_FILE", Default: "/etc/ssl/certs/ca-certificates.crt",
		Usage: "PEM bundle that upstream (Anthropic, Bedrock) certificates are verified against",
		apply: func(c *Config, v string) error { c.UpstreamCAFile = v; return nil },
	}}
}

// XDS returns the control plane's xDS server address.
func XDS() []Setting {
	return []Setting{{
		Flag: "xds-addr", Env: "CCPROXY_XDS_ADDR", Default: "0.0.0.0:18000",
		Usage: "address of the control plane's xDS (ADS) gRPC server that Envoy connects to",
		apply: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.XDSAddr = v
			return nil
		},
	}}
}

// ExtProc returns the ext_proc sidecar's settings.
func ExtProc() []Setting {
	return append(ExtProcAddress(), Setting{
		Flag: "usage-buffer", Env: "CCPROXY_USAGE_BUFFER", Default: "100000",
		Usage: "usage events extproc keeps in memory while Redis is unreachable; beyond it the oldest are dropped (counted in ccproxy_usage_stream_dropped_total)",
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 10_000_000 {
				return errors.New("must be a number of events from 1 to 10000000")
			}
			c.UsageBuffer = n
			return nil
		},
	}, Setting{
		Flag: "key-cache-ttl", Env: "CCPROXY_KEY_CACHE_TTL", Default: "5s",
		Usage: "how long extproc trusts a resolved access key before asking again (bounds how late a revocation is noticed)",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return errors.New("must be a positive duration such as 5s")
			}
			c.KeyCacheTTL = d
			return nil
		},
	}, Setting{
		Flag: "breaker-default-open", Env: "CCPROXY_BREAKER_DEFAULT_OPEN", Default: "60s",
		Usage: "how long an access key's Plan circuit breaker stays open (its plan_first requests go straight to Bedrock) after a Plan 429 that announces no reset, after the failure threshold, or after a failed probe",
		apply: durationSetting(time.Second, func(c *Config, d time.Duration) { c.Breaker.DefaultOpen = d }),
	}, Setting{
		Flag: "breaker-max-open", Env: "CCPROXY_BREAKER_MAX_OPEN", Default: "1h",
		Usage: "cap on how long a Plan 429's announced reset (retry-after, anthropic-ratelimit-*-reset) keeps the breaker open; after it one probe request goes to Plan",
		apply: durationSetting(time.Second, func(c *Config, d time.Duration) { c.Breaker.MaxOpen = d }),
	}, Setting{
		Flag: "breaker-failure-threshold", Env: "CCPROXY_BREAKER_FAILURE_THRESHOLD", Default: "3",
		Usage: "Plan 5xx/529 answers, connect failures and timeouts within CCPROXY_BREAKER_FAILURE_WINDOW that open an access key's breaker",
		apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				return errors.New("must be a number from 1 to 1000")
			}
			c.Breaker.FailureThreshold = n
			return nil
		},
	}, Setting{
		Flag: "breaker-failure-window", Env: "CCPROXY_BREAKER_FAILURE_WINDOW", Default: "60s",
		Usage: "sliding window in which CCPROXY_BREAKER_FAILURE_THRESHOLD failures open the breaker",
		apply: durationSetting(time.Second, func(c *Config, d time.Duration) { c.Breaker.FailureWindow = d }),
	}, Setting{
		Flag: "breaker-probe-lease", Env: "CCPROXY_BREAKER_PROBE_LEASE", Default: "30s",
		Usage: "how long the single half-open probe to Plan may take to report before another request becomes the probe",
		apply: durationSetting(time.Second, func(c *Config, d time.Duration) { c.Breaker.ProbeLease = d }),
	})
}

// durationSetting parses a duration of at least min and stores it with set.
func durationSetting(min time.Duration, set func(*Config, time.Duration)) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < min {
			return fmt.Errorf("must be a duration of at least %s, such as 60s", min)
		}
		set(c, d)
		return nil
	}
}

// ControlPlane returns where extproc reaches the control plane for its
// runtime configuration (model mappings, allow-lists, Bedrock regions).
func ControlPlane() []Setting {
	return []Setting{{
		Flag: "controlplane-addr", Env: "CCPROXY_CONTROLPLANE_ADDR", Default: "127.0.0.1:18000",
		Usage: "host:port of the control plane's xDS server, from which extproc receives its Bedrock runtime configuration",
		apply: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.ControlPlaneAddr = v
			return nil
		},
	}}
}

// ExtProcAddress returns the ext_proc address setting alone: extproc
// listens there and the control plane tells Envoy to connect there.
func ExtProcAddress() []Setting {
	return []Setting{{
		Flag: "extproc-addr", Env: "CCPROXY_EXTPROC_ADDR", Default: "unix:///run/ccproxy/extproc.sock",
		Usage: "ext_proc gRPC address: unix:///absolute/path (the sidecar's socket, shared with Envoy) or IP:port",
		apply: func(c *Config, v string) error {
			if p, ok := strings.CutPrefix(v, "unix://"); ok {
				if !strings.HasPrefix(p, "/") {
					return errors.New("a unix socket path must be absolute: unix:///path")
				}
			} else if err := checkHostPort(v); err != nil {
				return errors.New("must be unix:///absolute/path or IP:port")
			}
			c.ExtProcAddr = v
			return nil
		},
	}}
}

// Dev returns the settings only `ccproxy dev` has.
func Dev() []Setting {
	return []Setting{{
		Flag: "state-dir", Env: "CCPROXY_DEV_STATE_DIR",
		Usage: "directory where ccproxy dev keeps its generated server secret and demo access key (mode 0700); empty means $XDG_STATE_HOME/ccproxy or ~/.local/state/ccproxy",
		apply: func(c *Config, v string) error {
			if v == "" {
				v = defaultStateDir()
			}
			c.DevStateDir = v
			return nil
		},
	}, {
		Flag: "dev-resolve", Env: "CCPROXY_DEV_RESOLVE",
		Usage: "comma-separated host:port=ip:port pairs: envoysim connects to ip:port for upstream host:port (like curl --resolve: Host, SNI and certificate checks keep the name), e.g. bedrock-runtime.us-east-1.amazonaws.com:443=127.0.0.1:18443",
		apply: func(c *Config, v string) error {
			m, err := parseResolve(v)
			if err != nil {
				return err
			}
			c.DevResolve = m
			return nil
		},
	}}
}

// parseResolve parses host:port=ip:port[,…]; an empty string is no overrides.
func parseResolve(v string) (map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		from, to, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want host:port=ip:port", pair)
		}
		host, port, err := net.SplitHostPort(strings.TrimSpace(from))
		if err != nil || host == "" || !validPort(port) {
			return nil, fmt.Errorf("%q: %q is not host:port", pair, from)
		}
		ip, toPort, err := net.SplitHostPort(strings.TrimSpace(to))
		if err != nil || !validPort(toPort) {
			return nil, fmt.Errorf("%q: %q is not ip:port", pair, to)
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("%q: %q is not an IP address", pair, ip)
		}
		key := net.JoinHostPort(strings.ToLower(host), port)
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s is given twice", key)
		}
		out[key] = net.JoinHostPort(addr.String(), toPort)
	}
	return out, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535 && strconv.Itoa(n) == p
}

func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return d + "/ccproxy"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h + "/.local/state/ccproxy"
	}
	return ".ccproxy"
}

// WithDefault returns a copy of settings in which the setting with the
// given flag has a different default (e.g. loopback addresses for dev) and
// is optional. An empty default means the command derives the value itself
// when none is given.
func WithDefault(settings []Setting, flag, def string) []Setting {
	out := append([]Setting(nil), settings...)
	for i := range out {
		if out[i].Flag == flag {
			out[i].Default = def
			out[i].Required = false
			out[i].emptyOK = def == ""
		}
	}
	return out
}

// RedisNamespace returns the prefix of ccproxy's Redis keys and channels.
func RedisNamespace() []Setting {
	return []Setting{{
		Flag: "redis-prefix", Env: "CCPROXY_REDIS_PREFIX", Default: "ccproxy:",
		Usage: "prefix of every Redis key and pub/sub channel ccproxy uses (several installations may share one Redis)",
		apply: func(c *Config, v string) error { c.RedisPrefix = v; return nil },
	}}
}

// Admin returns the admin service's settings.
func Admin() []Setting {
	return []Setting{{
		Flag: "admin-addr", Env: "CCPROXY_ADMIN_ADDR", Default: "0.0.0.0:8081",
		Usage: "address (IP:port) of the admin REST API (/api/v1)",
		apply: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.AdminAddr = v
			return nil
		},
	}, {
		Flag: "admin-grpc-addr", Env: "CCPROXY_ADMIN_GRPC_ADDR", Default: "0.0.0.0:9091",
		Usage: "address (IP:port) of the internal KeyService gRPC server that extproc calls; keep it on a private network",
		apply: func(c *Config, v string) error {
			if err := checkHostPort(v); err != nil {
				return err
			}
			c.AdminGRPCAddr = v
			return nil
		},
	}, {
		Flag: "admin-username", Env: "CCPROXY_ADMIN_USERNAME", Default: "admin",
		Usage: "username of the first admin, created when no admin exists",
		apply: func(c *Config, v string) error { c.AdminUsername = v; return nil },
	}, {
		Flag: "admin-password", Env: "CCPROXY_ADMIN_PASSWORD", Secret: true,
		Usage: "password of the first admin, created when no admin exists (ccproxy dev generates and prints one when empty)",
		apply: func(c *Config, v string) error {
			if v != "" && len(v) < 12 {
				return errors.New("must be at least 12 characters")
			}
			c.AdminPassword = v
			return nil
		},
	}, {
		Flag: "usage-retention", Env: "CCPROXY_USAGE_RETENTION",
		Usage: "months of raw usage events (per-request rows) to keep before the current month, a whole number such as 13; " +
			"older monthly partitions are dropped by the hourly maintenance job. Hourly and daily rollups are always kept. Empty or 0 keeps everything",
		apply: func(c *Config, v string) error {
			if v == "" {
				c.UsageRetentionMonths = 0
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1200 {
				return errors.New("must be a whole number of months from 0 to 1200 (e.g. 13); 0 or empty keeps usage events forever")
			}
			c.UsageRetentionMonths = n
			return nil
		},
	}, {
		Flag: "cloudwatch-emf", Env: "CCPROXY_CLOUDWATCH_EMF", Default: "off",
		Usage: "CloudWatch embedded metric format (EMF) output of usage metrics (tokens, cost by provider and model): " +
			"off, or stdout (one JSON line per usage event batch, for the CloudWatch agent or a Lambda/ECS/EKS log pipeline)",
		apply: func(c *Config, v string) error {
			switch v {
			case "off", "stdout":
				c.CloudWatchEMF = v
				return nil
			}
			return errors.New("must be off or stdout")
		},
	}}
}

// Billing returns the billing time zone, which the admin service (monthly
// spend) and extproc (budget resets) must agree on.
func Billing() []Setting {
	return []Setting{{
		Flag: "billing-timezone", Env: "CCPROXY_BILLING_TIMEZONE", Default: "UTC",
		Usage: "IANA time zone (e.g. Europe/Paris) whose calendar months are the billing months of budgets and monthly spend",
		apply: func(c *Config, v string) error {
			loc, err := billing.LoadLocation(v)
			if err != nil {
				return errors.New("must be an IANA time zone name such as UTC or America/New_York")
			}
			c.BillingLocation = loc
			return nil
		},
	}}
}

// UsageIngest returns the admin service's usage ingester settings.
func UsageIngest() []Setting {
	return []Setting{{
		Flag: "usage-claim-idle", Env: "CCPROXY_USAGE_CLAIM_IDLE", Default: "30s",
		Usage: "how long a usage event may stay unacknowledged by an admin replica (crashed, stuck) before another replica takes it over",
		apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return errors.New("must be a duration of at least 1s, such as 30s")
			}
			c.UsageClaimIdle = d
			return nil
		},
	}}
}

// KeyService returns where extproc reaches the admin service's KeyService.
func KeyService() []Setting {
	return []Setting{{
		Flag: "keyservice-addr", Env: "CCPROXY_KEYSERVICE_ADDR", Default: "127.0.0.1:9091",
		Usage: "host:port of the admin service's KeyService (CCPROXY_ADMIN_GRPC_ADDR) for access-key lookups",
		apply: func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return errors.New("must be host:port")
			}
			c.KeyServiceAddr = v
			return nil
		},
	}}
}

// All returns every known setting group, for documentation.
func All() map[string][]Setting {
	return map[string][]Setting{
		"database": Database(), "redis": Redis(), "logging": Logging(),
		"keys": Keys(), "secrets": Secrets(), "serving": Serving(),
		"dataplane": DataPlane(), "xds": XDS(), "extproc": ExtProc(), "dev": Dev(),
		"redisns": RedisNamespace(), "admin": Admin(), "keyservice": KeyService(),
		"controlplane": ControlPlane(), "billing": Billing(), "usageingest": UsageIngest(),
	}
}

// Binding ties settings to a command's flag set.
type Binding struct {
	fs       *pflag.FlagSet
	settings []Setting
	values   map[string]*string
	lookup   func(string) (string, bool)
}

// Bind registers the flags of every setting in groups on fs. Settings that
// appear in more than one group are bound once.
func Bind(fs *pflag.FlagSet, groups ...[]Setting) *Binding {
	b := &Binding{fs: fs, values: map[string]*string{}, lookup: os.LookupEnv}
	for _, g := range groups {
		for _, s := range g {
			if _, dup := b.values[s.Flag]; dup {
				continue
			}
			usage := s.Usage + " (env " + s.Env + ")"
			def := s.Default
			if s.Secret {
				def = ""
			}
			b.values[s.Flag] = fs.String(s.Flag, def, usage)
			b.settings = append(b.settings, s)
		}
	}
	return b
}

// WithLookup replaces the environment lookup, for tests.
func (b *Binding) WithLookup(lookup func(string) (string, bool)) *Binding {
	b.lookup = lookup
	return b
}

// Load resolves every bound setting (flag, else environment, else default),
// validates it and returns the configuration. The error names the first bad
// setting by flag and variable, without echoing secret values.
func (b *Binding) Load() (*Config, error) {
	c := &Config{LogFormat: "auto", ShutdownTimeout: 30 * time.Second}
	var errs []error
	for _, s := range b.settings {
		v := s.Default
		if env, ok := b.lookup(s.Env); ok {
			v = env
		}
		if f := b.fs.Lookup(s.Flag); f != nil && f.Changed {
			v = *b.values[s.Flag]
		}
		v = strings.TrimSpace(v)
		if v == "" && s.Required {
			errs = append(errs, fmt.Errorf("setting %s is required: %s", s.Name(), s.Usage))
			continue
		}
		if v == "" && s.emptyOK {
			continue
		}
		if err := s.apply(c, v); err != nil {
			shown := strconv.Quote(v)
			if s.Secret {
				shown = "(secret, not shown)"
			}
			errs = append(errs, fmt.Errorf("setting %s = %s is invalid: %w", s.Name(), shown, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Settings returns the bound settings sorted by flag name.
func (b *Binding) Settings() []Setting {
	out := append([]Setting(nil), b.settings...)
	sort.Slice(out, func(i, j int) bool { return out[i].Flag < out[j].Flag })
	return out
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be host:port")
	}
	_ = host
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// decodeSecret accepts base64 (standard or URL, padded or not), hex, or raw
// text, and returns the bytes the encoding yields. Raw text is accepted so
// that `openssl rand -base64 48` output works either way.
func decodeSecret(v string) []byte {
	if b, err := decodeKeyBytes(v); err == nil {
		return b
	}
	return []byte(v)
}

func decodeKey32(v string) ([]byte, error) {
	b, err := decodeKeyBytes(v)
	if err != nil || len(b) != 32 {
		return nil, errors.New("must be exactly 32 bytes encoded as base64 or hex (e.g. `openssl rand -base64 32`)")
	}
	return b, nil
}

func decodeKeyBytes(v string) ([]byte, error) {
	if len(v)%2 == 0 {
		if b, err := hex.DecodeString(v); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64 or hex")
}
