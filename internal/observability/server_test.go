package observability

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadyzHardAndSoftChecks(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(msg string) Check { return func(context.Context) error { return errors.New(msg) } }
	tests := []struct {
		name       string
		hard, soft map[string]Check
		wantCode   int
		wantBody   string
	}{
		{"all pass", map[string]Check{"redis": ok}, map[string]Check{"keyservice": ok}, 200, `{"status":"ok"}` + "\n"},
		{"soft fails", map[string]Check{"redis": ok}, map[string]Check{"keyservice": down("refused")}, 200,
			`{"degraded":{"keyservice":"refused"},"status":"degraded"}` + "\n"},
		{"hard fails", map[string]Check{"runtime-config": down("none yet")}, map[string]Check{"keyservice": ok}, 503,
			`{"failed":{"runtime-config":"none yet"},"status":"unavailable"}` + "\n"},
		{"both fail", map[string]Check{"runtime-config": down("none yet")}, map[string]Check{"keyservice": down("refused")}, 503,
			`{"degraded":{"keyservice":"refused"},"failed":{"runtime-config":"none yet"},"status":"unavailable"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHealth()
			for n, c := range tt.hard {
				h.Add(n, c)
			}
			for n, c := range tt.soft {
				h.AddSoft(n, c)
			}
			rec := httptest.NewRecorder()
			Handler(prometheus.NewRegistry(), h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.wantCode || string(body) != tt.wantBody {
				t.Fatalf("got %d %s, want %d %s", rec.Code, body, tt.wantCode, tt.wantBody)
			}
		})
	}
}
