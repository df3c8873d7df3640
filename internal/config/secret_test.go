package config

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// loadShared binds every shared group, loads it from environ and returns
// the binding and the error text.
func loadShared(t testing.TB, environ map[string]string) (*Binding, string) {
	t.Helper()
	var c shared
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	b := Bind(fs, c.groups()...).WithLookup(env(environ))
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Load(); err != nil {
		return b, err.Error()
	}
	return b, ""
}

func TestLoadNeverEchoesPasswords(t *testing.T) {
	tests := []struct {
		name, env, value, wantErr string
	}{{
		name: "postgres URL without host", env: "DATABASE_URL", value: "postgres://u:hunter2@/db",
		wantErr: `setting --database-url / DATABASE_URL = "postgres://u:[REDACTED]@/db" is invalid: must be a postgres:// URL with a host`,
	}, {
		name: "url-encoded password, bad scheme", env: "DATABASE_URL", value: "mysql://u:hunt%40er2@db/x",
		wantErr: `setting --database-url / DATABASE_URL = "mysql://u:[REDACTED]@db/x" is invalid: must be a postgres:// URL with a host`,
	}, {
		name: "key=value DSN", env: "DATABASE_URL", value: "host=db user=u password='hunter 2' dbname=x",
		wantErr: `setting --database-url / DATABASE_URL = "host=db user=u password=[REDACTED] dbname=x" is invalid: must be a postgres:// URL with a host`,
	}, {
		name: "query parameter", env: "DATABASE_URL", value: "pg://u@db/x?sslmode=disable&password=hunter2",
		wantErr: `setting --database-url / DATABASE_URL = "pg://u@db/x?sslmode=disable&password=[REDACTED]" is invalid: must be a postgres:// URL with a host`,
	}, {
		name: "redis password that does not parse", env: "REDIS_URL", value: "http://:hunter2@[::1",
		wantErr: `setting --redis-url / REDIS_URL = "http://:[REDACTED]@[::1" is invalid: must be a redis://, rediss:// or unix:// URL`,
	}, {
		name: "short password inside its URL", env: "REDIS_URL", value: "tcp://:pw@db",
		wantErr: `setting --redis-url / REDIS_URL = "tcp://:[REDACTED]@db" is invalid: must be a redis://, rediss:// or unix:// URL`,
	}, {
		name: "secret setting", env: "CCPROXY_SERVER_SECRET", value: "hunter2",
		wantErr: `setting --server-secret / CCPROXY_SERVER_SECRET = (secret, not shown) is invalid: must be at least 32 bytes (e.g. ` + "`openssl rand -base64 32`" + `)`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			environ := map[string]string{"CCPROXY_SERVER_SECRET": secret32, tt.env: tt.value}
			_, got := loadShared(t, environ)
			if got != tt.wantErr {
				t.Fatalf("Load error\n got %s\nwant %s", got, tt.wantErr)
			}
		})
	}
}

func TestRedactorMasksSecretsInAnyText(t *testing.T) {
	b, errText := loadShared(t, map[string]string{
		"CCPROXY_SERVER_SECRET": secret32,
		"DATABASE_URL":          "postgres://app:s3cr%2Ft%40pw@db:5432/ccproxy",
		"REDIS_URL":             "rediss://default:redis-pass@cache:6380/0",
		"CCPROXY_MASTER_KEY":    "not a key",
	})
	if !strings.Contains(errText, "--master-key") {
		t.Fatalf("want a master key error, got %q", errText)
	}
	r := b.Redactor()
	for _, tt := range []struct{ in, want string }{
		{"connect postgres://app:s3cr%2Ft%40pw@db:5432/ccproxy: refused", "connect [REDACTED]: refused"},
		{"password s3cr/t@pw rejected", "password [REDACTED] rejected"},
		{"password s3cr%2Ft%40pw rejected", "password [REDACTED] rejected"},
		{"AUTH redis-pass failed", "AUTH [REDACTED] failed"},
		{"secret " + secret32 + " and key not a key", "secret [REDACTED] and key [REDACTED]"},
		{"nothing here", "nothing here"},
	} {
		if got := r.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// credentialShapes are the ways a password is written into a Postgres or
// Redis setting; each returns "" when pw cannot be written that way.
var credentialShapes = []struct {
	name, env string
	build     func(pw string) string
}{
	{"raw in URL", "DATABASE_URL", func(pw string) string { return "postgres://u:" + pw + "@db:5432/x" }},
	{"raw in URL without host", "DATABASE_URL", func(pw string) string { return "postgres://u:" + pw + "@/x" }},
	{"path-escaped", "DATABASE_URL", func(pw string) string { return "postgres://u:" + url.PathEscape(pw) + "@db/x" }},
	{"url.UserPassword", "DATABASE_URL", func(pw string) string {
		return (&url.URL{Scheme: "postgres", User: url.UserPassword("u", pw), Host: "db", Path: "/x"}).String()
	}},
	{"query parameter", "DATABASE_URL", func(pw string) string { return "postgres://u@db/x?password=" + url.QueryEscape(pw) }},
	{"key=value", "DATABASE_URL", func(pw string) string {
		if strings.ContainsAny(pw, " \t\n\r\v\f'\"&;") {
			return ""
		}
		return "host=db user=u password=" + pw
	}},
	{"key='value'", "DATABASE_URL", func(pw string) string {
		return "host=db password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw) + "' user=u"
	}},
	{"redis", "REDIS_URL", func(pw string) string { return "redis://:" + url.PathEscape(pw) + "@127.0.0.1:6379/0" }},
	{"redis raw", "REDIS_URL", func(pw string) string { return "rediss://user:" + pw + "@cache:6380" }},
}

// FuzzPasswordNeverShown checks, for any password in any shape, that
// neither the Load error nor the Redactor applied to what a library might
// print shows it.
func FuzzPasswordNeverShown(f *testing.F) {
	for _, s := range []string{"hunter2", "p@ss:w/rd?#", "with space", `q'uo"te\`, "100%", "ünïcødé", "p%40ss"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		// A password inside the mask, or sharing its brackets, can be
		// found at the seam of a mask and the text around it.
		if len(pw) < minSecretPartLen || strings.ContainsAny(pw, "[]") || strings.Contains(Masked, pw) {
			t.Skip()
		}
		for _, shape := range credentialShapes {
			value := shape.build(pw)
			if value == "" {
				continue
			}
			// What the surrounding text says with a harmless password.
			benign, benignErr := loadShared(t, map[string]string{"CCPROXY_SERVER_SECRET": secret32, shape.env: shape.build("zzzzzzzz")})
			texts := []string{benignErr, benign.Redactor().Redact(value)}
			if strings.Contains(strings.Join(texts, "\n")+shape.build("zzzzzzzz"), pw) {
				continue // the password is ordinary text of this shape
			}
			b, errText := loadShared(t, map[string]string{"CCPROXY_SERVER_SECRET": secret32, shape.env: value})
			if strings.Contains(errText, pw) {
				t.Fatalf("%s: Load error shows the password %q: %s", shape.name, pw, errText)
			}
			r := b.Redactor()
			for _, msg := range []string{
				value,
				fmt.Sprintf("failed to connect to %s: refused", value),
				"password " + pw + " is wrong",
				"password=" + url.QueryEscape(pw),
				"user u:" + url.PathEscape(pw),
			} {
				if got := r.Redact(msg); strings.Contains(got, pw) {
					t.Fatalf("%s: Redact(%q) = %q shows the password", shape.name, msg, got)
				}
			}
		}
	})
}
