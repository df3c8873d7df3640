package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"testing"

	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
)

// binaries are the executables every test runs. TestMain sets them once,
// before any test starts, and nothing writes them afterwards.
var binaries struct {
	ccproxy, statusline, claude string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ccproxy-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	binaries.ccproxy = filepath.Join(dir, "ccproxy")
	// The test build: the tag compiles in the upstream processor's fault
	// injection (extproc/upstream, faults_test_build.go), which only acts on
	// requests carrying its markers (upstream_failure_test.go).
	build := exec.CommandContext(ctx, "go", "build", "-tags", "ccproxyfaults", "-o", binaries.ccproxy, "github.com/ccproxy/ccproxy/cmd/ccproxy")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/ccproxy: %v\n%s", err, out)
		return 1
	}
	binaries.statusline = filepath.Join(dir, "ccproxy-statusline")
	build = exec.CommandContext(ctx, "go", "build", "-o", binaries.statusline, "github.com/ccproxy/ccproxy/cmd/ccproxy-statusline")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/ccproxy-statusline: %v\n%s", err, out)
		return 1
	}
	binaries.claude, err = claudecode.Install(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}
