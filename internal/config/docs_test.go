package config

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestBoundGroupsAndMarkdown: the documentation comes from what commands
// bind; a shared group lists every command binding it, shows the declared
// default rather than a command's own, and groups more commands share come
// first.
func TestBoundGroupsAndMarkdown(t *testing.T) {
	var l Logging
	var p Postgres
	var s Serving
	bound := func(name string, groups ...Group) CommandGroups {
		t.Helper()
		fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
		Bind(fs, groups...)
		got, err := BoundGroups(fs)
		if err != nil {
			t.Fatal(err)
		}
		return CommandGroups{Command: name, Groups: got}
	}
	cmds := []CommandGroups{
		bound("ccproxy a", p.Group(), l.Group()),
		bound("ccproxy b", l.Group(), s.Group().WithDefault("metrics-addr", "127.0.0.1:0")),
		bound("ccproxy c", l.Group(), s.Group(), p.Group()),
	}
	if g := cmds[0].Groups; len(g) != 2 || g[0].Title != "Database" || g[1].Title != "Logging" || len(g[1].Settings) != 2 {
		t.Fatalf("BoundGroups = %+v", g)
	}
	got, err := Markdown(cmds)
	if err != nil {
		t.Fatal(err)
	}
	want := "### Logging (`ccproxy a`, `ccproxy b`, `ccproxy c`)\n\n" +
		"| Variable | Flag | Default | Description |\n|---|---|---|---|\n" +
		"| `CCPROXY_LOG_FORMAT` | `--log-format` | `auto` | log format: json, text, or auto (text on a terminal, json otherwise) |\n" +
		"| `CCPROXY_LOG_LEVEL` | `--log-level` | `info` | minimum log level: debug, info, warn or error |\n\n" +
		"### Database (`ccproxy a`, `ccproxy c`)\n\n" +
		"| Variable | Flag | Default | Description |\n|---|---|---|---|\n" +
		"| `DATABASE_URL` | `--database-url` | `postgres://postgres@127.0.0.1:5432/ccproxy?sslmode=disable` | Postgres connection URL (postgres://user:pass@host:port/db?sslmode=…) Its password is never logged. |\n\n" +
		"### Serving (`ccproxy b`, `ccproxy c`)\n\n" +
		"| Variable | Flag | Default | Description |\n|---|---|---|---|\n" +
		"| `CCPROXY_METRICS_ADDR` | `--metrics-addr` | `127.0.0.1:9090`<br>`ccproxy b`: `127.0.0.1:0` | address for Prometheus /metrics and the /healthz and /readyz probes; empty disables |\n" +
		"| `CCPROXY_SHUTDOWN_TIMEOUT` | `--shutdown-timeout` | `30s` | how long to wait for in-flight work on shutdown |\n\n"
	if got != want {
		t.Fatalf("Markdown =\n%s\nwant\n%s", got, want)
	}
}

func TestMarkdownRefusesAFlagInTwoGroups(t *testing.T) {
	var p Postgres
	other := p.Group()
	other.Title = "Other"
	_, err := Markdown([]CommandGroups{
		{Command: "ccproxy a", Groups: []Group{p.Group()}},
		{Command: "ccproxy b", Groups: []Group{other}},
	})
	if err == nil || err.Error() != `config: --database-url is in group "Database" and in group "Other"` {
		t.Fatalf("err = %v", err)
	}
}

// TestWithDefault: a command's own default applies to its flag and makes
// the setting optional; an empty one leaves the field to the command.
func TestWithDefault(t *testing.T) {
	var k AccessKeys
	fs := pflag.NewFlagSet("dev", pflag.ContinueOnError)
	b := Bind(fs, k.Group().WithDefault("server-secret", "")).WithLookup(func(string) (string, bool) { return "", false })
	if err := b.Load(); err != nil || k.ServerSecret != nil {
		t.Fatalf("Load = %v, secret %q", err, k.ServerSecret)
	}
	var s Serving
	fs = pflag.NewFlagSet("dev", pflag.ContinueOnError)
	b = Bind(fs, s.Group().WithDefault("metrics-addr", "127.0.0.1:0")).WithLookup(func(string) (string, bool) { return "", false })
	if err := b.Load(); err != nil || s.MetricsAddr != "127.0.0.1:0" {
		t.Fatalf("Load = %v, addr %q", err, s.MetricsAddr)
	}
	if f := fs.Lookup("metrics-addr"); f.DefValue != "127.0.0.1:0" || !strings.Contains(f.Usage, "(env CCPROXY_METRICS_ADDR)") {
		t.Fatalf("flag = %+v", f)
	}
}
