// Package arch holds the test that keeps the package graph the shape
// docs/architecture.md draws: arrows only run down, extproc never reaches the
// database, and envoysim knows nothing of ccproxy.
package arch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/ccproxy/ccproxy"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// rule forbids packages under From to depend on (directly or not) packages
// matching To.
type rule struct {
	From   []string // module-relative prefixes ("extproc/") or exact paths
	Except []string // module-relative prefixes exempt from the rule
	To     []string // prefixes of forbidden dependencies (module-relative, or full import paths)
	Allow  []string // module-relative prefixes of To that stay allowed
	Why    string
}

var rules = []rule{
	{
		From: []string{""}, Except: []string{"extproc", "cmd/", "test/"},
		To:  []string{"extproc"},
		Why: "only extproc's own packages and the commands may use extproc's internals; shared contracts live in internal/",
	},
	{
		From: []string{"internal/"}, Except: []string{"internal/testenv"},
		To:  []string{"extproc", "controlplane", "admin", "envoy", "cmd/"},
		Why: "internal/ holds what the services share; an arrow back up into a service makes a loop of concerns",
	},
	{
		From: []string{"controlplane"},
		To:   []string{"admin", "extproc", "envoy"},
		Why:  "the control plane reads Postgres and serves xDS; it shares only internal/ contracts with the data path",
	},
	{
		From: []string{"admin"},
		To:   []string{"extproc", "controlplane", "envoy"},
		Why:  "the admin service shares only internal/ contracts with the data path",
	},
	{
		From: []string{"extproc"},
		To:   []string{"admin", "controlplane", "envoy", "internal/store", "internal/cli", "github.com/jackc/pgx", "github.com/pressly/goose"},
		Why:  "extproc holds no database credentials: it must not even link the database code",
	},
	{
		From:  []string{"envoy/"},
		To:    []string{"extproc", "controlplane", "admin", "internal/", "cmd/"},
		Allow: []string{"internal/xdsvalidate"}, // Envoy's own validation rules, nothing of ccproxy
		Why:   "envoysim stands in for Envoy: it knows only Envoy's APIs, never ccproxy's code",
	},
}

func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 30 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	return pkgs
}

// under reports whether the module-relative path rel is the package prefix
// or below it ("extproc" matches extproc and extproc/router; "cmd/" matches
// what is below cmd).
func under(rel, prefix string) bool {
	if prefix == "" {
		return true
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(rel, prefix)
	}
	return rel == prefix || strings.HasPrefix(rel, prefix+"/")
}

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func forbidden(r rule, dep string) bool {
	if d, ok := rel(dep); ok {
		for _, a := range r.Allow {
			if under(d, a) {
				return false
			}
		}
		for _, to := range r.To {
			if !strings.Contains(to, ".") && under(d, to) {
				return true
			}
		}
		return false
	}
	for _, to := range r.To {
		if strings.Contains(to, ".") && (dep == to || strings.HasPrefix(dep, to+"/")) {
			return true
		}
	}
	return false
}

func applies(r rule, p string) bool {
	for _, e := range r.Except {
		if under(p, e) {
			return false
		}
	}
	for _, f := range r.From {
		if under(p, f) {
			return true
		}
	}
	return false
}

// violations lists every forbidden edge, naming the direct import through
// which the forbidden package is reached.
func violations(pkgs []pkg) []string {
	byPath := map[string]pkg{}
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	var out []string
	for _, p := range pkgs {
		r0, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		for _, r := range rules {
			if !applies(r, r0) {
				continue
			}
			for _, dep := range p.Deps {
				if !forbidden(r, dep) {
					continue
				}
				via := dep
				for _, imp := range p.Imports {
					if imp == dep || contains(byPath[imp].Deps, dep) {
						via = imp
						break
					}
				}
				out = append(out, fmt.Sprintf("%s → %s (via %s): %s", p.ImportPath, dep, via, r.Why))
			}
		}
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestNoForbiddenImports(t *testing.T) {
	for _, v := range violations(list(t)) {
		t.Error(v)
	}
}

// TestRulesCatchForbiddenEdges proves the checker on a made-up graph: each
// forbidden kind of edge is reported, the allowed ones are not.
func TestRulesCatchForbiddenEdges(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	pkgs := []pkg{
		{ImportPath: m("internal/usagestream"), Imports: []string{m("extproc/metering")}, Deps: []string{m("extproc/metering")}},
		{ImportPath: m("extproc/router"), Imports: []string{m("internal/usage")}, Deps: []string{m("internal/usage")}},
		{ImportPath: m("extproc/bad"), Imports: []string{m("internal/billing")}, Deps: []string{m("internal/billing"), m("internal/store"), "github.com/jackc/pgx/v5"}},
		{ImportPath: m("controlplane"), Imports: []string{m("internal/dataplane")}, Deps: []string{m("internal/dataplane")}},
		{ImportPath: m("admin"), Imports: []string{m("extproc/accesskey")}, Deps: []string{m("extproc/accesskey")}},
		{ImportPath: m("cmd/ccproxy"), Imports: []string{m("extproc/router")}, Deps: []string{m("extproc/router")}},
		{ImportPath: m("envoy/envoysim"), Imports: []string{m("internal/dataplane")}, Deps: []string{m("internal/dataplane")}},
		{ImportPath: m("internal/testenv/procs"), Imports: []string{m("internal/store")}, Deps: []string{m("internal/store")}},
	}
	got := violations(pkgs)
	want := []string{
		m("admin") + " → " + m("extproc/accesskey"), // two rules
		m("admin") + " → " + m("extproc/accesskey"),
		m("envoy/envoysim") + " → " + m("internal/dataplane"),
		m("extproc/bad") + " → " + m("internal/store"),
		m("extproc/bad") + " → " + "github.com/jackc/pgx/v5",
		m("internal/usagestream") + " → " + m("extproc/metering"), // two rules
		m("internal/usagestream") + " → " + m("extproc/metering"),
	}
	var edges []string
	for _, v := range got {
		edges = append(edges, v[:strings.Index(v, " (via")])
	}
	sort.Strings(edges)
	sort.Strings(want)
	if strings.Join(edges, "\n") != strings.Join(want, "\n") {
		t.Fatalf("violations:\n%s\nwant edges:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
