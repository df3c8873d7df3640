package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/statusline"
)

const meAnswer = `{"spend":{"plan_usd":"9.140000","bedrock_usd":"3.200000","total_usd":"12.340000"},
"budget":{"monthly_budget_usd":"50.00","remaining_usd":"46.800000"},"plan":null,
"route":{"backend":"bedrock","reason":"bedrock_only","until":null},"cache":{"hit_rate_today":0.834,"requests_today":12},
"budgets":[{"id":"b","scope":"user","window":"daily","metric":"all","limit_usd":"5.000000","spent_usd":"4.200000","action":"downgrade",
"window_start":"2026-12-07","resets_at":"2026-12-08T00:00:00Z","downgrade_map":{"opus":"claude-sonnet-4-5"}}]}`

const meLine = "$12.34 this month · Bedrock $3.20 of $50.00 · day $4.20/$5.00 → sonnet · 5h n/a · → Bedrock · cache 83%\n"

func meServer(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ak/ak_good/me" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, meAnswer)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRun(t *testing.T) {
	srv := meServer(t)
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		out, err string
	}{
		{"the line", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_good"}, nil, 0, meLine, ""},
		{"a refused key: the fallback", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_bad"}, nil, 0, statusline.Fallback + "\n", ""},
		{"a bad timeout flag", nil, []string{"--timeout", "2m"}, 2, "", "ccproxy-statusline: --timeout must be a duration from 1ms to 1m, such as 300ms\n"},
		{"a bad timeout in the environment", map[string]string{statusline.EnvTimeout: "soon"}, nil, 2, "",
			"ccproxy-statusline: CCPROXY_STATUSLINE_TIMEOUT must be a duration from 1ms to 1m, such as 300ms\n"},
		{"the flag beats the environment", map[string]string{statusline.EnvBaseURL: srv.URL + "/ak/ak_good", statusline.EnvTimeout: "soon"},
			[]string{"--timeout", "5s"}, 0, meLine, ""},
		{"an argument", nil, []string{"now"}, 2, "", "ccproxy-statusline: unexpected argument \"now\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tt.args, func(k string) string { return tt.env[k] }, nil, &out, &errOut)
			if code != tt.code || out.String() != tt.out || errOut.String() != tt.err {
				t.Fatalf("run = %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tt.code, tt.out, tt.err)
			}
		})
	}
}

// TestStandardLibraryOnly: the program links nothing but the standard
// library and internal/statusline, which is what keeps its start fast
// (BenchmarkStatuslineProcess); a dependency added to either would undo it.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/ccproxy/ccproxy/cmd/ccproxy-statusline" && p != "github.com/ccproxy/ccproxy/internal/statusline" {
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		t.Fatalf("ccproxy-statusline depends on %v; it must use the standard library only", extra)
	}
}

// BenchmarkStatuslineProcess is what Claude Code pays on each status
// update: starting ccproxy-statusline, its GET /me to a local server and
// the line (os/exec from this process). The "spawn floor" runs true(1),
// the least a process costs here, for comparison.
func BenchmarkStatuslineProcess(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "ccproxy-statusline")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	srv := meServer(b)
	b.Run("ccproxy-statusline", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command(bin)
			cmd.Env = []string{statusline.EnvBaseURL + "=" + srv.URL + "/ak/ak_good", "TZ=UTC"}
			out, err := cmd.Output()
			if err != nil || string(out) != meLine {
				b.Fatalf("%v: %q", err, out)
			}
		}
	})
	b.Run("spawn floor", func(b *testing.B) {
		truePath, err := exec.LookPath("true")
		if err != nil {
			b.Skip("no true(1)")
		}
		for b.Loop() {
			if err := exec.Command(truePath).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
