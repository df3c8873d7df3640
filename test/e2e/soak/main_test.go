package soak

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// binary is the ccproxy executable the soak runs; TestMain builds it once.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ccproxy-soak-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	binary = filepath.Join(dir, "ccproxy")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "github.com/ccproxy/ccproxy/cmd/ccproxy")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "soak: go build ./cmd/ccproxy: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
