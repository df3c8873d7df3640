package config

import (
	"errors"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ccproxy/ccproxy/internal/billing"
)

// The settings structs below are the ones several commands read. Each
// returns its Group with the setters bound to itself: a command keeps the
// struct, binds the group, and reads the fields after Binding.Load.

// Logging is where and how a command logs; every command has it.
type Logging struct {
	// Format is json, text or auto (text on a terminal, else json).
	Format string
	// Level is the minimum level logged.
	Level slog.Level
}

// Group returns the logging settings.
func (l *Logging) Group() Group {
	return Group{Title: "Logging", Settings: []Setting{{
		Flag: "log-format", Env: "CCPROXY_LOG_FORMAT", Default: "auto",
		Usage: "log format: json, text, or auto (text on a terminal, json otherwise)",
		Set: func(v string) error {
			switch v {
			case "json", "text", "auto":
				l.Format = v
				return nil
			}
			return errors.New("must be json, text or auto")
		},
	}, {
		Flag: "log-level", Env: "CCPROXY_LOG_LEVEL", Default: "info",
		Usage: "minimum log level: debug, info, warn or error",
		Set: func(v string) error {
			return l.Level.UnmarshalText([]byte(v))
		},
	}}}
}

// Postgres is the database connection.
type Postgres struct {
	// URL is the Postgres connection URL.
	URL string
}

// Group returns the Postgres connection setting.
func (p *Postgres) Group() Group {
	return Group{Title: "Database", Settings: []Setting{{
		Flag: "database-url", Env: "DATABASE_URL", Credentials: true,
		Default: "postgres://postgres@127.0.0.1:5432/ccproxy?sslmode=disable",
		Usage:   "Postgres connection URL (postgres://user:pass@host:port/db?sslmode=…)",
		Set: func(v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
				return errors.New("must be a postgres:// URL with a host")
			}
			p.URL = v
			return nil
		},
	}}}
}

// Redis is the Redis connection and the namespace of ccproxy's keys in it.
type Redis struct {
	// URL is the Redis connection URL.
	URL string
	// Prefix starts every Redis key and channel ccproxy uses.
	Prefix string
}

// Group returns the Redis settings.
func (r *Redis) Group() Group {
	return Group{Title: "Redis", Settings: []Setting{{
		Flag: "redis-url", Env: "REDIS_URL", Credentials: true,
		Default: "redis://127.0.0.1:6379/0",
		Usage:   "Redis connection URL (redis:// or rediss://)",
		Set: func(v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
				return errors.New("must be a redis://, rediss:// or unix:// URL")
			}
			r.URL = v
			return nil
		},
	}, {
		Flag: "redis-prefix", Env: "CCPROXY_REDIS_PREFIX", Default: "ccproxy:",
		Usage: "prefix of every Redis key and pub/sub channel ccproxy uses (several installations may share one Redis)",
		Set:   func(v string) error { r.Prefix = v; return nil },
	}}}
}

// AccessKeys is the secret that access keys are hashed with.
type AccessKeys struct {
	// ServerSecret keys the HMAC under which access keys are stored.
	ServerSecret []byte
}

// Group returns the server secret setting.
func (k *AccessKeys) Group() Group {
	return Group{Title: "Access keys", Settings: []Setting{{
		Flag: "server-secret", Env: "CCPROXY_SERVER_SECRET", Secret: true, Required: true,
		Usage: "secret (≥ 32 bytes; base64, hex or raw text) keying the HMAC of stored access keys; changing it invalidates every key",
		Set: func(v string) error {
			b := decodeSecret(v)
			if len(b) < 32 {
				return errors.New("must be at least 32 bytes (e.g. `openssl rand -base64 32`)")
			}
			k.ServerSecret = b
			return nil
		},
	}}}
}

// Secrets selects how stored secrets (Bedrock API keys) are encrypted.
type Secrets struct {
	// MasterKey is the local AES-256 master key for stored secrets.
	MasterKey []byte
	// KMSKeyID selects AWS KMS envelope encryption when set.
	KMSKeyID string
	// KMSEndpoint overrides the KMS API endpoint (tests, VPC endpoints).
	KMSEndpoint string
}

// Group returns the stored-secret encryption settings.
func (s *Secrets) Group() Group {
	return Group{Title: "Stored secrets", Settings: []Setting{{
		Flag: "master-key", Env: "CCPROXY_MASTER_KEY", Secret: true,
		Usage: "local AES-256 master key for stored secrets: 32 bytes as base64 or hex; required unless --kms-key-id is set",
		Set: func(v string) error {
			if v == "" {
				return nil
			}
			b, err := decodeKey32(v)
			if err != nil {
				return err
			}
			s.MasterKey = b
			return nil
		},
	}, {
		Flag: "kms-key-id", Env: "CCPROXY_KMS_KEY_ID",
		Usage: "AWS KMS key id or ARN; when set, stored secrets use KMS envelope encryption (AWS credentials and region from the default chain)",
		Set:   func(v string) error { s.KMSKeyID = v; return nil },
	}, {
		Flag: "kms-endpoint", Env: "CCPROXY_KMS_ENDPOINT",
		Usage: "override the KMS API endpoint URL (VPC endpoints, tests)",
		Set: func(v string) error {
			if v != "" {
				if u, err := url.Parse(v); err != nil || u.Scheme == "" || u.Host == "" {
					return errors.New("must be an absolute URL")
				}
			}
			s.KMSEndpoint = v
			return nil
		},
	}}}
}

// Serving is what every long-running command has: its metrics and probes
// endpoint and how long it drains on shutdown.
type Serving struct {
	// MetricsAddr is where /metrics, /healthz and /readyz are served; empty disables.
	MetricsAddr string
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout time.Duration
}

// Group returns the serving settings.
func (s *Serving) Group() Group {
	return Group{Title: "Serving", Settings: []Setting{{
		Flag: "metrics-addr", Env: "CCPROXY_METRICS_ADDR", Default: "127.0.0.1:9090",
		Usage: "address for Prometheus /metrics and the /healthz and /readyz probes; empty disables",
		Set: func(v string) error {
			if v != "" {
				if err := CheckHostPort(v); err != nil {
					return err
				}
			}
			s.MetricsAddr = v
			return nil
		},
	}, {
		Flag: "shutdown-timeout", Env: "CCPROXY_SHUTDOWN_TIMEOUT", Default: "30s",
		Usage: "how long to wait for in-flight work on shutdown",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return errors.New("must be a positive duration such as 30s")
			}
			s.ShutdownTimeout = d
			return nil
		},
	}}}
}

// Billing is the time zone of billing months, which the admin service
// (monthly spend) and extproc (budget resets) must agree on.
type Billing struct {
	// Location is the time zone of billing months (budgets, monthly
	// spend); nil means UTC.
	Location *time.Location
}

// Group returns the billing time zone setting.
func (b *Billing) Group() Group {
	return Group{Title: "Billing", Settings: []Setting{{
		Flag: "billing-timezone", Env: "CCPROXY_BILLING_TIMEZONE", Default: "UTC",
		Usage: "IANA time zone (e.g. Europe/Paris) whose calendar months are the billing months of budgets and monthly spend, and whose days, ISO weeks and months are the windows of budgets that act (docs/budgets.md)",
		Set: func(v string) error {
			loc, err := billing.LoadLocation(v)
			if err != nil {
				return errors.New("must be an IANA time zone name such as UTC or America/New_York")
			}
			b.Location = loc
			return nil
		},
	}}}
}

// Telemetry is the OpenTelemetry export: traces from extproc, the
// per-request metric set from the admin service's usage ingester.
type Telemetry struct {
	// Exporter is off, grpc or http (OTLP over gRPC or over HTTP/protobuf).
	Exporter string
	// Endpoint is the OTLP receiver: host:port for grpc, host:port or an
	// http(s) URL for http; empty means the protocol's default port on
	// localhost (4317, 4318).
	Endpoint string
	// Insecure sends OTLP in plaintext (a collector beside the process).
	Insecure bool
	// SampleRatio is the share of new traces sampled (0 to 1); a request
	// that arrives with a sampled trace context is always recorded.
	SampleRatio float64
	// PerUser adds the per-user metrics (proxy.user.*) to the OpenTelemetry
	// and CloudWatch outputs.
	PerUser bool
}

// Group returns the telemetry settings.
func (t *Telemetry) Group() Group {
	return Group{Title: "OpenTelemetry", Settings: []Setting{{
		Flag: "otel-exporter", Env: "CCPROXY_OTEL_EXPORTER", Default: "off",
		Usage: "OpenTelemetry export (traces from extproc, the per-request metrics from the admin service): off, grpc (OTLP/gRPC) or http (OTLP/HTTP protobuf)",
		Set: func(v string) error {
			switch v {
			case "off", "grpc", "http":
				t.Exporter = v
				return nil
			}
			return errors.New("must be off, grpc or http")
		},
	}, {
		Flag: "otel-endpoint", Env: "CCPROXY_OTEL_ENDPOINT",
		Usage: "OTLP receiver (an OpenTelemetry Collector): host:port, or for http also an http(s):// URL; empty means localhost:4317 (grpc) or localhost:4318 (http)",
		Set: func(v string) error {
			if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
				if err := CheckHostPort(v); err != nil {
					return errors.New("must be host:port or an http(s):// URL")
				}
			}
			t.Endpoint = v
			return nil
		},
	}, {
		Flag: "otel-insecure", Env: "CCPROXY_OTEL_INSECURE", Default: "false",
		Usage: "send OTLP without TLS (a collector on the same host or pod); an http:// endpoint is plaintext anyway",
		Set: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			t.Insecure = b
			return nil
		},
	}, {
		Flag: "otel-sample-ratio", Env: "CCPROXY_OTEL_SAMPLE_RATIO", Default: "1",
		Usage: "share of requests traced when Envoy sent no sampled trace context, from 0 to 1 (a sampled parent is always followed, an unsampled one never)",
		Set: func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 || f != f {
				return errors.New("must be a number from 0 to 1, such as 0.1")
			}
			t.SampleRatio = f
			return nil
		},
	}, {
		Flag: "metrics-per-user", Env: "CCPROXY_METRICS_PER_USER", Default: "false",
		Usage: "add the per-user metrics proxy.user.requests, proxy.user.tokens and proxy.user.cost (by user id) to the OpenTelemetry and CloudWatch EMF outputs; each user is a new series",
		Set: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			t.PerUser = b
			return nil
		},
	}}}
}
