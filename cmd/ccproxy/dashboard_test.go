package main

import (
	"bytes"
	"encoding/json"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

var grafanaDashboardFile = filepath.Join(repoRoot, "k8s", "components", "monitoring", "grafana-dashboard.json")

// grafanaDashboard is the part of Grafana's dashboard JSON model
// (schemaVersion 39) the shipped dashboard uses; decoding refuses any
// other field, so a misspelt one fails.
type grafanaDashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	Editable      bool     `json:"editable"`
	GraphTooltip  int      `json:"graphTooltip"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Refresh    string `json:"refresh"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Label string `json:"label"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []json.RawMessage `json:"list"`
	} `json:"annotations"`
	Links  []json.RawMessage `json:"links"`
	Panels []grafanaPanel    `json:"panels"`
}

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource  grafanaDatasource `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []json.RawMessage `json:"overrides"`
	} `json:"fieldConfig"`
	Options json.RawMessage `json:"options"`
	Targets []struct {
		RefID        string            `json:"refId"`
		Datasource   grafanaDatasource `json:"datasource"`
		Expr         string            `json:"expr"`
		LegendFormat string            `json:"legendFormat"`
	} `json:"targets"`
}

// grafanaMacros are Grafana's interval variables, replaced by a duration
// before an expression is parsed as PromQL.
var grafanaMacros = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "6h")

// TestGrafanaDashboard checks the shipped dashboard: it decodes strictly
// as Grafana's dashboard model, its panels fit Grafana's 24-column grid
// with unique ids, every query goes to the dashboard's Prometheus data
// source variable, and every expression parses with Prometheus' PromQL
// parser and selects only metrics (and labels) that ccproxy registers.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(grafanaDashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string][]string{}
	for _, m := range gatewayMetrics(t) {
		metrics[m.Name] = m.Labels
	}
	for _, p := range dashboardProblems(raw, metrics) {
		t.Errorf("%s: %s", grafanaDashboardFile, p)
	}
	// Grafana's own schema, as its foundation SDK generates it: every
	// field of the dashboard and of each panel kind's options and field
	// config, strictly (an unknown or mistyped field fails).
	plugins.RegisterDefaultPlugins()
	//lint:ignore SA1019 the dashboard is Grafana's classic JSON model (what its import and provisioning read); dashboardv2 is the newer resource format
	var d dashboard.Dashboard
	// The SDK returns an empty cog.BuildErrors, a non-nil error value, when
	// nothing is wrong.
	if err := d.UnmarshalJSONStrict(raw); err != nil {
		if be, ok := err.(cog.BuildErrors); !ok || len(be) != 0 {
			t.Errorf("%s does not match Grafana's dashboard schema: %v", grafanaDashboardFile, err)
		}
	}
	if len(d.Panels) == 0 {
		t.Errorf("%s: Grafana's schema read no panels", grafanaDashboardFile)
	}
}

func dashboardProblems(raw []byte, metrics map[string][]string) []string {
	var d grafanaDashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return []string{"not a dashboard: " + err.Error()}
	}
	var out []string
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 || len(d.Panels) == 0 {
		out = append(out, "uid, title, schemaVersion ≥ 36 and panels are required")
	}
	if len(d.Templating.List) != 1 || d.Templating.List[0].Name != "datasource" || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		out = append(out, "the only variable must be the Prometheus data source variable \"datasource\"")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		switch {
		case ids[p.ID] || p.ID <= 0:
			out = append(out, p.Title+": panel id missing or repeated")
		case p.Title == "" || !slices.Contains([]string{"timeseries", "stat", "gauge", "table", "bargauge"}, p.Type):
			out = append(out, p.Title+": a title and a known panel type are required")
		case p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24:
			out = append(out, p.Title+": gridPos outside Grafana's 24 columns")
		case p.Datasource.UID != "${datasource}" || len(p.Targets) == 0:
			out = append(out, p.Title+": queries must use the ${datasource} variable")
		}
		ids[p.ID] = true
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" || tg.RefID == "" {
				out = append(out, p.Title+": target without refId or data source variable")
			}
			out = append(out, exprProblems(p.Title, tg.Expr, metrics)...)
		}
	}
	return out
}

// exprProblems parses expr (Grafana's macros replaced) and checks that
// every selected metric is registered, with labels it has.
func exprProblems(where, expr string, metrics map[string][]string) []string {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaMacros.Replace(expr))
	if err != nil {
		return []string{where + ": " + err.Error()}
	}
	var out []string
	parser.Inspect(e, func(n parser.Node, path []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		labels, known := metrics[name]
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); !known && ok {
				labels, known = metrics[base]
				if suffix == "_bucket" {
					labels = append(slices.Clone(labels), "le")
				}
			}
		}
		if !known {
			out = append(out, where+": "+name+" is not a metric ccproxy registers")
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != "__name__" && !slices.Contains(labels, m.Name) {
				out = append(out, where+": "+name+" has no label "+m.Name)
			}
		}
		return nil
	})
	return out
}

// TestDashboardProblems shows what TestGrafanaDashboard refuses.
func TestDashboardProblems(t *testing.T) {
	metrics := map[string][]string{"ccproxy_extproc_errors_total": {"provider", "type"}, "ccproxy_extproc_ttft_seconds": {"provider", "model", "outcome"}}
	dash := func(expr string) string {
		return `{"uid":"u","title":"t","schemaVersion":39,"templating":{"list":[{"name":"datasource","type":"datasource","query":"prometheus"}]},` +
			`"panels":[{"id":1,"type":"timeseries","title":"p","gridPos":{"h":8,"w":12,"x":0,"y":0},"datasource":{"type":"prometheus","uid":"${datasource}"},` +
			`"targets":[{"refId":"A","datasource":{"type":"prometheus","uid":"${datasource}"},"expr":` + strconvQuote(expr) + `}]}]}`
	}
	for _, tc := range []struct {
		name, raw string
		want      string
	}{
		{"good", dash(`sum by (type) (rate(ccproxy_extproc_errors_total[$__rate_interval]))`), ""},
		{"histogram", dash(`histogram_quantile(0.9, sum by (le) (rate(ccproxy_extproc_ttft_seconds_bucket{outcome="success"}[5m])))`), ""},
		{"unknown metric", dash(`rate(ccproxy_nope_total[5m])`), "p: ccproxy_nope_total is not a metric ccproxy registers"},
		{"unknown label", dash(`rate(ccproxy_extproc_errors_total{model="x"}[5m])`), "p: ccproxy_extproc_errors_total has no label model"},
		{"bad PromQL", dash(`sum(rate(ccproxy_extproc_errors_total[5m])`), "p: "},
		{"unknown field", `{"uid":"u","titel":"t"}`, "not a dashboard: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dashboardProblems([]byte(tc.raw), metrics)
			if tc.want == "" {
				if len(got) != 0 {
					t.Errorf("problems %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Errorf("problems %q, want one starting with %q", got, tc.want)
			}
		})
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
