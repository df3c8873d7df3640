package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/testenv"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// registered runs the whole gateway (`ccproxy dev`: admin service, control
// plane and extproc) once and records every metric its components
// register; the process collectors (go_*, process_*) are not among them.
var registered struct {
	once    sync.Once
	metrics []observability.MetricDesc
	err     error
}

func gatewayMetrics(t *testing.T) []observability.MetricDesc {
	t.Helper()
	registered.once.Do(func() { registered.metrics, registered.err = recordMetrics(t) })
	if registered.err != nil {
		t.Fatal(registered.err)
	}
	return registered.metrics
}

func recordMetrics(t *testing.T) ([]observability.MetricDesc, error) {
	_, prefix := testenv.Redis(t)
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sockDir)
	s := &devSettings{}
	fs := pflag.NewFlagSet("dev", pflag.ContinueOnError)
	b := config.Bind(fs, s.groups()...).WithLookup(env(map[string]string{
		"DATABASE_URL":           testenv.Postgres(t),
		"REDIS_URL":              testenv.RedisURL(),
		"CCPROXY_REDIS_PREFIX":   prefix,
		"CCPROXY_LISTEN_ADDR":    freeAddr(t),
		"CCPROXY_XDS_ADDR":       "127.0.0.1:0",
		"CCPROXY_ADMIN_ADDR":     "127.0.0.1:0",
		"CCPROXY_METRICS_ADDR":   "",
		"CCPROXY_EXTPROC_ADDR":   "unix://" + filepath.Join(sockDir, "extproc.sock"),
		"CCPROXY_DEV_STATE_DIR":  t.TempDir(),
		"CCPROXY_ADMIN_PASSWORD": "correct-horse-battery",
	}))
	if err := fs.Parse(nil); err != nil {
		return nil, err
	}
	if err := b.Load(); err != nil {
		return nil, err
	}
	var catalog *observability.Catalog
	s.wrapRegisterer = func(r prometheus.Registerer) prometheus.Registerer {
		catalog = observability.NewCatalog(r)
		return catalog
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, s, slog.New(slog.DiscardHandler), out) }()
	for !strings.Contains(out.String(), "==> ccproxy dev is ready") {
		select {
		case err := <-done:
			return nil, fmt.Errorf("ccproxy dev ended before it was ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		return nil, err
	}
	return catalog.Metrics(), nil
}

// metricsMarkdown is the body of docs/metrics.md's generated section: one
// table per component (the second word of the name).
func metricsMarkdown(metrics []observability.MetricDesc) string {
	titles := map[string]string{
		"admin":        "Admin service (`ccproxy admin`)",
		"controlplane": "Control plane (`ccproxy controlplane`)",
		"extproc":      "ext_proc server (`ccproxy extproc`)",
		"usage":        "Usage (`ccproxy_usage_stream_*`: `ccproxy extproc` publishing; the rest: `ccproxy admin` ingesting)",
		"access":       "Access keys (`ccproxy admin`)",
		"maintenance":  "Maintenance: partitions, retention, key expiry (`ccproxy admin`)",
	}
	groups := map[string][]observability.MetricDesc{}
	var order []string
	for _, m := range metrics {
		part := strings.SplitN(strings.TrimPrefix(m.Name, "ccproxy_"), "_", 2)[0]
		if _, ok := groups[part]; !ok {
			order = append(order, part)
		}
		groups[part] = append(groups[part], m)
	}
	sort.Strings(order)
	var b strings.Builder
	for _, part := range order {
		title := titles[part]
		if title == "" {
			title = "`ccproxy_" + part + "_*`"
		}
		fmt.Fprintf(&b, "### %s\n\n| Metric | Labels | Description |\n|---|---|---|\n", title)
		for _, m := range groups[part] {
			labels := "—"
			if len(m.Labels) > 0 {
				labels = "`" + strings.Join(m.Labels, "`, `") + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", m.Name, labels, strings.ReplaceAll(m.Help, "|", `\|`))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestMetricsDocsUpToDate keeps docs/metrics.md's tables identical to the
// metrics the gateway registers. Run with -update to rewrite them.
func TestMetricsDocsUpToDate(t *testing.T) {
	path := filepath.Join(repoRoot, "docs", "metrics.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- metrics:begin (generated from the registered metrics: go test ./cmd/ccproxy -run TestMetricsDocsUpToDate -update) -->\n", "<!-- metrics:end -->"
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the metrics markers", path)
	}
	want := metricsMarkdown(gatewayMetrics(t))
	if doc[i+len(begin):j] == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date; run: go test ./cmd/ccproxy -run TestMetricsDocsUpToDate -update", path)
}

// docLine is one line of a document.
type docLine struct {
	file string
	n    int
	text string
	code bool // inside a fenced code block
}

func (l docLine) String() string { return fmt.Sprintf("%s:%d", l.file, l.n) }

// docLines returns every line of README.md and docs/*.md.
func docLines(t *testing.T) []docLine {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(repoRoot, "README.md")}, files...)
	var out []docLine
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		n, code := 0, false
		for sc.Scan() {
			n++
			text := sc.Text()
			if strings.HasPrefix(strings.TrimSpace(text), "```") {
				code = !code
				continue
			}
			rel, _ := filepath.Rel(repoRoot, f)
			out = append(out, docLine{file: rel, n: n, text: text, code: code})
		}
		fh.Close()
	}
	return out
}

var (
	metricToken = regexp.MustCompile(`\bccproxy_[a-z0-9_]+\*?`)
	envToken    = regexp.MustCompile(`\bCCPROXY_[A-Z0-9_]+\b`)
	apiToken    = regexp.MustCompile(`/api/v1(?:/[A-Za-z0-9_.{}<>:-]+)*`)
	inlineCode  = regexp.MustCompile("`([^`]+)`")
)

// notMetrics are ccproxy_ words in the docs that name something else; each
// must still be in the code.
var notMetrics = map[string]string{
	"ccproxy_http":     "the Envoy listener the control plane configures",
	"ccproxy_extproc":  "the Envoy cluster of the ext_proc sidecar",
	"ccproxy_config":   "the Postgres NOTIFY channel of configuration changes",
	"ccproxy_bench_5m": "the database of the usage query benchmarks",
	"ccproxy_oidc":     "the cookie of a single sign-on in progress",
}

// TestDocsMatchTheCode checks every claim of README.md and docs/*.md that
// can be checked mechanically: metric names against the registered
// metrics, CCPROXY_* variables against the commands' settings (or the
// code that reads them), admin API paths against the OpenAPI document
// the admin service serves, and ccproxy command lines (commands and
// flags) against the command tree.
func TestDocsMatchTheCode(t *testing.T) {
	lines := docLines(t)
	root := newRootCommand(nil)

	t.Run("metrics", func(t *testing.T) {
		inCode := wordsInCode(t, metricToken)
		for w, what := range notMetrics {
			if !inCode[w] {
				t.Errorf("%s (%s) is no longer in the code", w, what)
			}
		}
		names := map[string]bool{}
		for _, m := range gatewayMetrics(t) {
			names[m.Name] = true
		}
		for _, l := range lines {
			for _, tok := range metricToken.FindAllString(l.text, -1) {
				if _, ok := notMetrics[tok]; ok {
					continue
				}
				if strings.HasSuffix(tok, "*") || strings.HasSuffix(tok, "_") {
					prefix := strings.TrimSuffix(tok, "*")
					if !anyPrefix(names, prefix) {
						t.Errorf("%s: no registered metric starts with %s", l, prefix)
					}
					continue
				}
				base := tok
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(tok, suffix) && names[strings.TrimSuffix(tok, suffix)] {
						base = strings.TrimSuffix(tok, suffix)
					}
				}
				if !names[base] {
					t.Errorf("%s: %s is not a registered metric", l, tok)
				}
			}
		}
	})

	t.Run("variables", func(t *testing.T) {
		settings := map[string]bool{}
		for _, cg := range commandGroups(t, root) {
			for _, g := range cg.Groups {
				for _, s := range g.Settings {
					settings[s.Env] = true
				}
			}
		}
		read := wordsInCode(t, envToken)
		for _, l := range lines {
			for _, tok := range envToken.FindAllString(l.text, -1) {
				if !settings[tok] && !read[tok] {
					t.Errorf("%s: %s is neither a setting nor read by the code", l, tok)
				}
			}
		}
	})

	t.Run("admin API paths", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(repoRoot, "admin", "openapi.json"))
		if err != nil {
			t.Fatal(err)
		}
		var spec struct {
			Paths map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(raw, &spec); err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			for _, tok := range apiToken.FindAllString(l.text, -1) {
				tok = strings.TrimRight(tok, ".:-")
				if tok == "/api/v1" || strings.HasSuffix(tok, "/") || strings.Contains(tok, "…") {
					continue
				}
				if !matchesAPIPath(spec.Paths, tok) {
					t.Errorf("%s: %s is not an admin API path", l, tok)
				}
			}
		}
	})

	t.Run("every command in the README", func(t *testing.T) {
		var table strings.Builder
		for _, l := range lines {
			if l.file == "README.md" && strings.HasPrefix(l.text, "| `ccproxy ") {
				table.WriteString(l.text + "\n")
			}
		}
		for _, c := range root.Commands() {
			name := c.Name()
			if c.Hidden || name == "help" || name == "completion" {
				continue
			}
			if !strings.Contains(table.String(), "`ccproxy "+name) && !strings.Contains(table.String(), "`"+name+"`") {
				t.Errorf("README.md's table of commands does not list ccproxy %s", name)
			}
		}
	})

	t.Run("command lines", func(t *testing.T) {
		for _, l := range lines {
			var candidates []string
			if l.code {
				candidates = []string{l.text}
			} else {
				for _, m := range inlineCode.FindAllStringSubmatch(l.text, -1) {
					candidates = append(candidates, m[1])
				}
			}
			for _, c := range candidates {
				for _, cmdline := range ccproxyCommands(c) {
					if err := checkCommandLine(root, cmdline); err != nil {
						t.Errorf("%s: `%s`: %v", l, strings.Join(cmdline, " "), err)
					}
				}
			}
		}
	})
}

func anyPrefix(names map[string]bool, prefix string) bool {
	for n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// wordsInCode are the words matching re in the Go code, the Makefile,
// scripts and YAML: for the CCPROXY_* variables that are not settings (test
// switches, tool paths) and the ccproxy_ words that are not metrics.
func wordsInCode(t *testing.T, re *regexp.Regexp) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "docs", "dist":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, ".sh") && !strings.HasSuffix(path, ".yaml") && d.Name() != "Makefile" {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, tok := range re.FindAllString(string(raw), -1) {
			read[tok] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return read
}

// matchesAPIPath reports whether a path written in the docs (with {id},
// <id> or :id for a parameter, or a real id) names a path of the spec.
func matchesAPIPath(paths map[string]json.RawMessage, doc string) bool {
	segs := strings.Split(doc, "/")
	for p := range paths {
		want := strings.Split(p, "/")
		if len(want) != len(segs) {
			continue
		}
		ok := true
		for i := range want {
			if strings.HasPrefix(want[i], "{") {
				continue
			}
			if want[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// ccproxyCommands finds the ccproxy command lines in a line of shell or an
// inline code span: the words after "ccproxy" or "bin/ccproxy" up to the
// end of the command (a pipe, a redirection, a comment, ;, &&, ||).
func ccproxyCommands(s string) [][]string {
	var out [][]string
	words := strings.Fields(s)
	for i := 0; i < len(words); i++ {
		w := strings.Trim(words[i], "$")
		if w != "ccproxy" && w != "bin/ccproxy" && w != "./ccproxy" && !strings.HasSuffix(w, "/bin/ccproxy") {
			continue
		}
		// VAR=ccproxy, make ccproxy, -U ccproxy: a value, not the command.
		if i > 0 && (strings.HasSuffix(words[i-1], "=") || words[i-1] == "make" || strings.HasPrefix(words[i-1], "-")) {
			continue
		}
		var cmd []string
		for j := i + 1; j < len(words); j++ {
			x := words[j]
			if x == "|" || x == ";" || x == "&&" || x == "||" || strings.HasPrefix(x, "#") || strings.HasPrefix(x, "<") || strings.HasPrefix(x, ">") || strings.HasPrefix(x, "2>") {
				break
			}
			cmd = append(cmd, x)
			i = j
		}
		out = append(out, cmd)
	}
	return out
}

// checkCommandLine reports a command or flag the command tree does not have.
// A word of alternatives (up|down|status) is checked one alternative at a
// time.
func checkCommandLine(root *cobra.Command, args []string) error {
	for i, a := range args {
		a = strings.ReplaceAll(a, `\|`, "|")
		if strings.Contains(a, "|") && !strings.HasPrefix(a, "-") {
			for _, alt := range strings.Split(a, "|") {
				with := append(append(append([]string(nil), args[:i]...), alt), args[i+1:]...)
				if err := checkCommandLine(root, with); err != nil {
					return err
				}
			}
			return nil
		}
	}
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	cmd, rest, err := root.Find(words)
	if err != nil {
		return err
	}
	// A word that is not a subcommand is an argument, unless the command
	// has subcommands and takes none (then it is a mistyped command).
	if len(rest) > 0 && cmd.HasSubCommands() && cmd.Args == nil && !cmd.Runnable() {
		return fmt.Errorf("%q is not a command of %q", rest[0], cmd.CommandPath())
	}
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
		name = strings.TrimRight(name, ",.)`'\"")
		if name == "" || strings.ContainsAny(name, "<…") {
			continue
		}
		if strings.HasPrefix(a, "--") {
			if cmd.Flags().Lookup(name) == nil && cmd.InheritedFlags().Lookup(name) == nil && name != "help" {
				return fmt.Errorf("%q has no flag --%s", cmd.CommandPath(), name)
			}
		} else if len(name) == 1 {
			if cmd.Flags().ShorthandLookup(name) == nil && cmd.InheritedFlags().ShorthandLookup(name) == nil && name != "h" {
				return fmt.Errorf("%q has no flag -%s", cmd.CommandPath(), name)
			}
		}
	}
	return nil
}
