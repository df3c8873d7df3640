package admin_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/admin"
)

// TestClientChosenValuesAreBounded: the request method and path are the
// client's; neither may create metric series or fill the log. Before the
// fix, 2,000 requests with invented methods made 2,000 series.
func TestClientChosenValuesAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(o *admin.Options) { o.Registerer = reg })
	longMethod := "X" + strings.Repeat("M", 8000)
	longPath := "/api/v1/" + strings.Repeat("p", 8000)
	for i, m := range []string{"BREW", "PROPFIND", "X1", "X2", longMethod, http.MethodGet} {
		path := "/api/v1/users"
		if i == 0 {
			path = longPath
		}
		req, err := http.NewRequest(m, e.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "ccproxy_admin_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" {
					methods[l.GetValue()] = true
				}
			}
		}
	}
	for m := range methods {
		switch m {
		case "other", http.MethodGet, http.MethodPost: // POST: the harness's login
		default:
			t.Fatalf("method label values %v: %q is a client's invention", methods, m)
		}
	}
	if !methods["other"] {
		t.Fatalf("method label values %v: invented methods not counted as other", methods)
	}
	logs := e.logs.String()
	if strings.Contains(logs, strings.Repeat("M", 300)) || strings.Contains(logs, strings.Repeat("p", 300)) {
		t.Fatal("a client-chosen method or path reached the log unbounded")
	}
}
