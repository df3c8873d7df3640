package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const secret32 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64 of 32 ASCII bytes

// shared is every settings struct of this package, as a command would hold them.
type shared struct {
	Postgres Postgres
	Redis    Redis
	Logging  Logging
	Keys     AccessKeys
	Secrets  Secrets
	Serving  Serving
}

func (c *shared) groups() []Group {
	return []Group{c.Postgres.Group(), c.Redis.Group(), c.Logging.Group(), c.Keys.Group(), c.Secrets.Group(), c.Serving.Group()}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(t *testing.T, c *shared)
		wantErr string
	}{{
		name: "defaults",
		env:  map[string]string{"CCPROXY_SERVER_SECRET": secret32},
		check: func(t *testing.T, c *shared) {
			if c.Postgres.URL != "postgres://postgres@127.0.0.1:5432/ccproxy?sslmode=disable" || c.Redis.URL != "redis://127.0.0.1:6379/0" {
				t.Errorf("urls = %q %q", c.Postgres.URL, c.Redis.URL)
			}
			if c.Logging.Format != "auto" || c.Logging.Level != slog.LevelInfo || c.Serving.ShutdownTimeout != 30*time.Second || c.Serving.MetricsAddr != "127.0.0.1:9090" {
				t.Errorf("got %+v", c)
			}
			if string(c.Keys.ServerSecret) != "0123456789abcdef0123456789abcdef" {
				t.Errorf("secret not decoded: %q", c.Keys.ServerSecret)
			}
		},
	}, {
		name: "flag wins over environment",
		env:  map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_LOG_LEVEL": "warn", "DATABASE_URL": "postgres://a@db:5432/x"},
		args: []string{"--log-level=debug"},
		check: func(t *testing.T, c *shared) {
			if c.Logging.Level != slog.LevelDebug || c.Postgres.URL != "postgres://a@db:5432/x" {
				t.Errorf("got level %v url %q", c.Logging.Level, c.Postgres.URL)
			}
		},
	}, {
		name: "hex master key",
		env:  map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_MASTER_KEY": strings.Repeat("ab", 32)},
		check: func(t *testing.T, c *shared) {
			if len(c.Secrets.MasterKey) != 32 || c.Secrets.MasterKey[0] != 0xab {
				t.Errorf("master key = %x", c.Secrets.MasterKey)
			}
		},
	}, {
		name:    "missing secret",
		env:     map[string]string{},
		wantErr: "setting --server-secret / CCPROXY_SERVER_SECRET is required",
	}, {
		name:    "short secret is not echoed",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": "hunter2"},
		wantErr: "setting --server-secret / CCPROXY_SERVER_SECRET = (secret, not shown) is invalid: must be at least 32 bytes",
	}, {
		name:    "bad database url",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": secret32, "DATABASE_URL": "mysql://x"},
		wantErr: `setting --database-url / DATABASE_URL = "mysql://x" is invalid: must be a postgres:// URL with a host`,
	}, {
		name:    "bad log level",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_LOG_LEVEL": "loud"},
		wantErr: `setting --log-level / CCPROXY_LOG_LEVEL = "loud" is invalid`,
	}, {
		name:    "master key wrong length",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_MASTER_KEY": "abcd"},
		wantErr: "setting --master-key / CCPROXY_MASTER_KEY = (secret, not shown) is invalid: must be exactly 32 bytes",
	}, {
		name:    "bad metrics addr",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_METRICS_ADDR": "9090"},
		wantErr: `setting --metrics-addr / CCPROXY_METRICS_ADDR = "9090" is invalid: must be host:port`,
	}, {
		name:    "bad duration",
		env:     map[string]string{"CCPROXY_SERVER_SECRET": secret32, "CCPROXY_SHUTDOWN_TIMEOUT": "-1s"},
		wantErr: `setting --shutdown-timeout / CCPROXY_SHUTDOWN_TIMEOUT = "-1s" is invalid: must be a positive duration`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			c := &shared{}
			b := Bind(fs, c.groups()...).WithLookup(env(tt.env))
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := b.Load()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("secret echoed in %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestBindOnlyDeclaredSettings(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	var l Logging
	b := Bind(fs, l.Group(), l.Group())
	if got := len(b.Settings()); got != 2 {
		t.Fatalf("bound %d settings, want 2 (duplicates bound once)", got)
	}
	if fs.Lookup("database-url") != nil {
		t.Fatal("database-url bound without being declared")
	}
}
