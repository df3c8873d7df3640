package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// TestExtProcReadyzReflectsItsDependencies runs `ccproxy extproc` with
// neither control plane nor KeyService reachable: /readyz answers 503 for
// want of a runtime configuration, and reports the KeyService as degraded
// (a soft dependency).
func TestExtProcReadyzReflectsItsDependencies(t *testing.T) {
	_, prefix := testenv.Redis(t)
	sockDir, err := os.MkdirTemp("", "ccx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	metrics := freeAddr(t)
	for k, v := range map[string]string{
		"REDIS_URL":                     testenv.RedisURL(),
		"CCPROXY_REDIS_PREFIX":          prefix,
		"CCPROXY_SERVER_SECRET":         "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		"CCPROXY_LOG_FORMAT":            "json",
		"CCPROXY_METRICS_ADDR":          metrics,
		"CCPROXY_EXTPROC_ADDR":          "unix://" + filepath.Join(sockDir, "extproc.sock"),
		"CCPROXY_CONTROLPLANE_ADDR":     freeAddr(t), // nothing listens
		"CCPROXY_CONTROLPLANE_INSECURE": "true",
		"CCPROXY_KEYSERVICE_ADDR":       freeAddr(t), // nothing listens
	} {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRootCommand(nil)
		root.SetArgs([]string{"extproc"})
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("extproc: %v", err)
		}
	}()
	type readyz struct {
		Status   string            `json:"status"`
		Failed   map[string]string `json:"failed"`
		Degraded map[string]string `json:"degraded"`
	}
	// Poll until the KeyService channel has failed to connect once.
	var got readyz
	var code int
	for {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err == nil {
			code = resp.StatusCode
			got = readyz{}
			_ = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if got.Degraded["keyservice"] != "" {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("extproc ended: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if code != http.StatusServiceUnavailable || got.Status != "unavailable" {
		t.Fatalf("readyz %d %+v, want 503 unavailable", code, got)
	}
	if want := "no runtime configuration received from the control plane yet"; got.Failed["runtime-config"] != want {
		t.Errorf("failed = %v, want runtime-config: %s", got.Failed, want)
	}
	if want := "KeyService connection transient_failure: keys not cached yet cannot be resolved"; got.Degraded["keyservice"] != want {
		t.Errorf("degraded = %v, want keyservice: %s", got.Degraded, want)
	}
	if _, hard := got.Failed["keyservice"]; hard {
		t.Error("the KeyService is a hard dependency")
	}
}
