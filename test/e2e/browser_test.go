package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/dashboard"
)

// dashboardBrowser runs the dashboard's browser scripts (dashboard/e2e/*.mjs)
// with node and playwright-core in Debian's chromium.
type dashboardBrowser struct {
	chromium string // the chromium executable
	dir      string // dashboard/: node_modules and the e2e scripts
	// Artifacts is the directory the scripts write their screenshots to:
	// $CCPROXY_BROWSER_ARTIFACTS, or the test's temporary directory.
	Artifacts string
}

// needDashboardBrowser returns what the browser tests need, or skips the
// test when something is missing: the dashboard built into the binary,
// chromium, playwright-core. Under CCPROXY_REQUIRE_BROWSER_TESTS=1 (make
// test, which builds and installs all three) a missing piece fails the
// test instead, so that CI cannot pass by skipping.
func needDashboardBrowser(t *testing.T) dashboardBrowser {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("CCPROXY_REQUIRE_BROWSER_TESTS") == "1" {
			t.Fatal(why + " (CCPROXY_REQUIRE_BROWSER_TESTS=1: make test builds the dashboard and installs chromium)")
		}
		t.Skip(why + "; make test runs this test")
	}
	if !dashboard.Built() {
		skip("the dashboard is not built into this binary (make dashboard)")
	}
	chromiumPath, err := exec.LookPath("chromium")
	if err != nil {
		skip("no chromium")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "dashboard"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		skip("dashboard/node_modules has no playwright-core (make dashboard)")
	}
	artifacts := os.Getenv("CCPROXY_BROWSER_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(t.TempDir(), "screenshots")
	}
	return dashboardBrowser{chromium: chromiumPath, dir: dir, Artifacts: artifacts}
}

// run runs script (relative to dashboard/) with env added to the test's
// environment, logs what it prints, and decodes the JSON of its
// "RESULT {…}" line into res. The script's failure, or an "Error" in its
// result, fails the test with its stderr.
func (b dashboardBrowser) run(t *testing.T, timeout time.Duration, script string, env []string, res any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = b.dir
	cmd.Env = append(append(os.Environ(), env...), "ARTIFACTS="+b.Artifacts, "CHROMIUM="+b.chromium)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var failed struct{ Error string }
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		v, ok := strings.CutPrefix(sc.Text(), "RESULT ")
		if !ok {
			t.Log(sc.Text())
			continue
		}
		if err := json.Unmarshal([]byte(v), res); err != nil {
			t.Fatalf("browser result: %v", err)
		}
		if err := json.Unmarshal([]byte(v), &failed); err != nil {
			t.Fatalf("browser result: %v", err)
		}
	}
	t.Logf("screenshots in %s", b.Artifacts)
	if runErr != nil || failed.Error != "" {
		t.Fatalf("browser test failed: %v %s\n%s", runErr, failed.Error, stderr.String())
	}
}
