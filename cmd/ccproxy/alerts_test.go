package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// The alert rules ship twice: as a plain Prometheus rules file and, for the
// Prometheus Operator, as a PrometheusRule in the monitoring component that
// wraps the same groups.
var (
	rulesFile          = filepath.Join(repoRoot, "k8s", "components", "monitoring", "rules", "ccproxy.rules.yaml")
	prometheusRuleFile = filepath.Join(repoRoot, "k8s", "components", "monitoring", "alerts.yaml")
)

// prometheusRuleHeader precedes the groups of the plain rules file, indented
// under spec, in the PrometheusRule.
const prometheusRuleHeader = `# Generated from rules/ccproxy.rules.yaml (the same groups as a plain
# Prometheus rules file): edit that file, then run
#   go test ./cmd/ccproxy -run TestAlertRules -update
# What each alert means and the first thing to check: docs/operations.md, "Alerts".
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ccproxy
  labels:
    app.kubernetes.io/name: ccproxy
spec:
`

// prometheusRule returns the PrometheusRule wrapping the plain rules file's
// groups: its lines from "groups:" on, indented under spec.
func prometheusRule(plain string) (string, error) {
	i := strings.Index(plain, "\ngroups:\n")
	if i < 0 {
		return "", fmt.Errorf("%s has no top-level groups: line", rulesFile)
	}
	var b strings.Builder
	b.WriteString(prometheusRuleHeader)
	for _, line := range strings.SplitAfter(plain[i+1:], "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// targetLabels are the labels Prometheus adds to every scraped series (the
// Prometheus Operator's among them), which rules may select or group by.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service"}

// rulePromQL is the parser Prometheus itself uses for rule expressions.
var rulePromQL = parser.NewParser(parser.Options{})

// envoyStats returns the Envoy series docs/operations.md documents for
// alerting (its "Metrics and the counters to alert on" table).
func envoyStats(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, "### Metrics and the counters to alert on")
	if start < 0 {
		t.Fatal("docs/operations.md lacks the section \"Metrics and the counters to alert on\"")
	}
	section := doc[start:]
	if end := strings.Index(section[4:], "\n### "); end >= 0 {
		section = section[:end+4]
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`\benvoy_[a-z0-9_]+`).FindAllString(section, -1) {
		out[m] = true
	}
	return out
}

// selectedMetric is a series selector of a rule: the metric it names and
// the labels it matches on.
type selectedMetric struct {
	name   string
	labels []string
}

// selectors returns every vector selector of expr.
func selectors(expr parser.Expr) []selectedMetric {
	var out []selectedMetric
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		var s selectedMetric
		s.name = vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				if m.Type == labels.MatchEqual {
					s.name = m.Value
				}
				continue
			}
			s.labels = append(s.labels, m.Name)
		}
		out = append(out, s)
		return nil
	})
	return out
}

// anchorIDs returns the ids of the HTML anchors in docs/operations.md.
func anchorIDs(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`<a id="([^"]+)"></a>`).FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = true
	}
	return out
}

// alertRuleProblems checks a rules file: Prometheus's own rules parser
// accepts it (PromQL and annotation templates included); every rule is an
// alert with a for: duration, a severity, a summary, a description and a
// runbook_url whose anchor is among anchors; every metric a rule selects is
// in metrics (with the labels it matches on) or is an Envoy series in envoy.
func alertRuleProblems(raw []byte, metrics map[string][]string, envoy, anchors map[string]bool) []string {
	groups, errs := rulefmt.Parse(raw, false, model.UTF8Validation, rulePromQL, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		var out []string
		for _, err := range errs {
			out = append(out, err.Error())
		}
		return out
	}
	// The raw YAML tells a missing for: from "for: 0m" (both decode to 0).
	var generic struct {
		Groups []struct {
			Rules []map[string]any `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &generic); err != nil {
		return []string{err.Error()}
	}
	var out []string
	seen := map[string]bool{}
	n := 0
	for gi, g := range groups.Groups {
		for ri, r := range g.Rules {
			n++
			bad := func(format string, args ...any) {
				out = append(out, fmt.Sprintf("%s/%s: ", g.Name, r.Alert)+fmt.Sprintf(format, args...))
			}
			if r.Alert == "" {
				bad("rule %d is not an alert", ri)
				continue
			}
			if seen[r.Alert] {
				bad("defined twice")
			}
			seen[r.Alert] = true
			if _, ok := generic.Groups[gi].Rules[ri]["for"]; !ok {
				bad("no for: duration (write for: 0m to fire at once)")
			}
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				bad("severity %q, want critical, warning or info", r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					bad("no %s annotation", a)
				}
			}
			id := "alert-" + strings.ToLower(r.Alert)
			if want := "https://github.com/ccproxy/ccproxy/blob/main/docs/operations.md#" + id; r.Annotations["runbook_url"] != want {
				bad("runbook_url %q, want %q", r.Annotations["runbook_url"], want)
			}
			if !anchors[id] {
				bad("docs/operations.md has no anchor <a id=%q></a> (a row of its Alerts table)", id)
			}
			expr, err := rulePromQL.ParseExpr(r.Expr)
			if err != nil {
				bad("expr: %v", err)
				continue
			}
			sels := selectors(expr)
			if len(sels) == 0 {
				bad("expr selects no series")
			}
			for _, s := range sels {
				switch {
				case s.name == "":
					bad("a selector names no metric")
				case s.name == "up":
					// Prometheus's own per-target series.
				case strings.HasPrefix(s.name, "envoy_"):
					if !envoy[s.name] {
						bad("%s is not among the Envoy series of docs/operations.md \"Metrics and the counters to alert on\"", s.name)
					}
				default:
					have, ok := metrics[s.name]
					if !ok {
						for _, suffix := range []string{"_bucket", "_sum", "_count"} {
							if base, cut := strings.CutSuffix(s.name, suffix); cut {
								have, ok = metrics[base]
								if suffix == "_bucket" {
									have = append(slices.Clone(have), "le")
								}
								break
							}
						}
					}
					if !ok {
						bad("%s is not a metric ccproxy registers (docs/metrics.md)", s.name)
						continue
					}
					for _, l := range s.labels {
						if !slices.Contains(have, l) && !slices.Contains(targetLabels, l) {
							bad("%s has no label %q", s.name, l)
						}
					}
				}
			}
		}
	}
	if n == 0 {
		out = append(out, "no rules")
	}
	return out
}

// TestAlertRules checks the shipped alert rules (see alertRuleProblems)
// against the metrics the gateway registers and docs/operations.md, and
// that the PrometheusRule is the plain file's groups. Run with -update to
// regenerate the PrometheusRule.
func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string][]string{}
	for _, m := range gatewayMetrics(t) {
		metrics[m.Name] = m.Labels
	}
	for _, p := range alertRuleProblems(raw, metrics, envoyStats(t), anchorIDs(t)) {
		t.Errorf("%s: %s", rulesFile, p)
	}

	want, err := prometheusRule(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(prometheusRuleFile)
	if err != nil && !*update {
		t.Fatal(err)
	}
	if string(got) == want {
		return
	}
	if *update {
		if err := os.WriteFile(prometheusRuleFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s differs from %s; run: go test ./cmd/ccproxy -run TestAlertRules -update", prometheusRuleFile, rulesFile)
}

// TestAlertRuleProblems shows what the check of TestAlertRules refuses.
func TestAlertRuleProblems(t *testing.T) {
	metrics := map[string][]string{
		"ccproxy_extproc_auth_failures_total":    {"reason"},
		"ccproxy_extproc_phase_duration_seconds": {"phase"},
		"ccproxy_usage_ingest_lag":               nil,
	}
	envoy := map[string]bool{"envoy_control_plane_connected_state": true}
	anchors := map[string]bool{"alert-a": true}
	rule := func(expr, extra string) string {
		return "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: '" + expr + "'\n" + extra
	}
	const good = "    for: 5m\n    labels: {severity: warning}\n    annotations:\n      summary: s\n      description: d\n      runbook_url: https://github.com/ccproxy/ccproxy/blob/main/docs/operations.md#alert-a\n"
	for _, tc := range []struct {
		name, rules string
		want        []string
	}{
		{"good", rule(`sum by (pod) (rate(ccproxy_extproc_auth_failures_total{reason="lookup_error",pod!=""}[5m])) > 0 or up == 0 or envoy_control_plane_connected_state == 0 or histogram_quantile(0.99, rate(ccproxy_extproc_phase_duration_seconds_bucket{phase="request_body"}[5m])) > 1 or ccproxy_usage_ingest_lag > 1`, good), nil},
		{"unknown metric", rule(`ccproxy_extproc_nope_total > 0`, good), []string{"g/A: ccproxy_extproc_nope_total is not a metric ccproxy registers (docs/metrics.md)"}},
		{"unknown label", rule(`ccproxy_usage_ingest_lag{reason="x"} > 0`, good), []string{`g/A: ccproxy_usage_ingest_lag has no label "reason"`}},
		{"undocumented envoy series", rule(`envoy_cluster_upstream_rq_timeout > 0`, good), []string{`g/A: envoy_cluster_upstream_rq_timeout is not among the Envoy series of docs/operations.md "Metrics and the counters to alert on"`}},
		{"selector by regex name", rule(`{__name__=~"ccproxy_.*"} > 0`, good), []string{"g/A: a selector names no metric"}},
		{"no for", rule(`up == 0`, strings.Replace(good, "    for: 5m\n", "", 1)), []string{"g/A: no for: duration (write for: 0m to fire at once)"}},
		{"bad severity", rule(`up == 0`, strings.Replace(good, "severity: warning", "severity: page", 1)), []string{`g/A: severity "page", want critical, warning or info`}},
		{"no summary", rule(`up == 0`, strings.Replace(good, "      summary: s\n", "", 1)), []string{"g/A: no summary annotation"}},
		{"runbook anchor", rule(`up == 0`, strings.Replace(good, "#alert-a", "#alerts", 1)), []string{`g/A: runbook_url "https://github.com/ccproxy/ccproxy/blob/main/docs/operations.md#alerts", want "https://github.com/ccproxy/ccproxy/blob/main/docs/operations.md#alert-a"`}},
		{"bad promql", rule(`up ==`, good), []string{"5:11: group \"g\", rule 1, \"A\": could not parse expression: 1:6: parse error: unexpected end of input"}},
		{"bad template", rule(`up == 0`, strings.Replace(good, "summary: s", "summary: '{{ $labels.pod '", 1)), []string{`group "g", rule 1, "A": annotation "summary": template: __alert_A:1: unclosed action`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := alertRuleProblems([]byte(tc.rules), metrics, envoy, anchors)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("problems = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAlertRuleSelectors: the selectors read from an expression, with the
// metric named either way and the labels matched on.
func TestAlertRuleSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []selectedMetric
	}{
		{`up{container="extproc"} == 0`, []selectedMetric{{"up", []string{"container"}}}},
		{`sum by (reason) (rate(ccproxy_extproc_auth_failures_total{reason="lookup_error"}[5m])) > 0`, []selectedMetric{{"ccproxy_extproc_auth_failures_total", []string{"reason"}}}},
		{`{__name__="ccproxy_usage_ingest_lag"} + ccproxy_usage_ingest_pending`, []selectedMetric{{"ccproxy_usage_ingest_lag", nil}, {"ccproxy_usage_ingest_pending", nil}}},
		{`{__name__=~"envoy_.*"}`, []selectedMetric{{"", nil}}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			expr, err := rulePromQL.ParseExpr(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			got := selectors(expr)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("selectors = %v, want %v", got, tc.want)
			}
		})
	}
}
