// Package claudecode installs real Claude Code releases from npm (cached
// between runs) and runs them non-interactively against a gateway, the way
// a developer would, for end-to-end tests: the pinned release most tests
// use, and the releases of the last year listed in releases.txt.
package claudecode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Version is the Claude Code release the end-to-end tests pin.
const Version = "2.1.332"

// Install returns the path of the claude executable of the pinned release,
// installing it the first time (InstallVersion).
func Install(ctx context.Context) (string, error) {
	return InstallVersion(ctx, Version)
}

// InstallVersion returns the path of the claude executable of version,
// installing the release with npm into a cache directory keyed by the
// version the first time. The directory is CCPROXY_E2E_CACHE if set, else
// the user cache dir; a lock file keeps parallel test packages from
// installing twice. Both ways Claude Code has been packaged work: up to
// 2.1.112 the package's bin is cli.js, run by Node.js; from 2.1.113 it is
// a native executable that npm installs from a platform package (an
// optional dependency), linked under the same node_modules/.bin/claude.
func InstallVersion(ctx context.Context, version string) (string, error) {
	if !validVersion(version) {
		return "", fmt.Errorf("claudecode: %q is not a release version", version)
	}
	base := os.Getenv("CCPROXY_E2E_CACHE")
	if base == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("claudecode: cache dir: %w", err)
		}
		base = filepath.Join(d, "ccproxy", "e2e")
	}
	dir := filepath.Join(base, "claude-code-"+version)
	bin := filepath.Join(dir, "node_modules", ".bin", "claude")
	if ok(ctx, bin, version) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("claudecode: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if ok(ctx, bin, version) {
		return bin, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("claudecode: npm not found (install Node.js and npm): %w", err)
	}
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", dir, "@anthropic-ai/claude-code@"+version)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("claudecode: npm install @anthropic-ai/claude-code@%s: %w\n%s", version, err, out.String())
	}
	if !ok(ctx, bin, version) {
		return "", fmt.Errorf("claudecode: installed, but %s --version does not report %s\n%s", bin, version, out.String())
	}
	return bin, nil
}

// validVersion reports whether v is a plain release version (digits and
// dots): it names a directory and an npm package spec.
func validVersion(v string) bool {
	if v == "" || v[0] == '.' || v[len(v)-1] == '.' || strings.Contains(v, "..") {
		return false
	}
	for _, c := range v {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

func ok(ctx context.Context, bin, version string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = append(os.Environ(), "HOME="+os.TempDir())
	out, err := cmd.Output()
	return err == nil && strings.HasPrefix(string(out), version+" ")
}

func lock(ctx context.Context, path string) (func(), error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			f.Close()
			return func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("claudecode: lock: %w", err)
		}
		// A lock older than the longest plausible install was left by a
		// killed run.
		if st, err := os.Stat(path); err == nil && time.Since(st.ModTime()) > 10*time.Minute {
			os.Remove(path)
			continue
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Run is one `claude -p` invocation.
type Run struct {
	// Bin is the claude executable (from Install).
	Bin string
	// BaseURL is ANTHROPIC_BASE_URL, e.g. http://127.0.0.1:8080/ak/<key>.
	BaseURL string
	// APIKey sets ANTHROPIC_API_KEY (sent as x-api-key).
	APIKey string
	// AuthToken sets ANTHROPIC_AUTH_TOKEN instead (sent as Authorization: Bearer).
	AuthToken string
	// Env adds variables.
	Env []string
	// Args are extra arguments before the prompt.
	Args []string
	// Dir is the working directory (a fresh temp dir when empty).
	Dir string
	// Home is HOME (a fresh temp dir when empty). Runs sharing Home and
	// Dir can continue one conversation (Args "--continue").
	Home string
	// Timeout bounds the run (default 3 minutes).
	Timeout time.Duration
}

// Result is what the run printed.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Prompt runs `claude -p prompt` with a throwaway HOME and returns its output.
func (r Run) Prompt(t testing.TB, prompt string) Result {
	t.Helper()
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	home := r.Home
	if home == "" {
		home = t.TempDir()
	}
	dir := r.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	args := append(append([]string{}, r.Args...), "-p", prompt)
	cmd := exec.CommandContext(ctx, r.Bin, args...)
	cmd.Dir = dir
	env := []string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"ANTHROPIC_BASE_URL=" + r.BaseURL,
		// Offline: no telemetry, error reporting or auto-update traffic.
		"DISABLE_TELEMETRY=1", "DISABLE_ERROR_REPORTING=1", "DISABLE_AUTOUPDATER=1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
	}
	if r.APIKey != "" {
		env = append(env, "ANTHROPIC_API_KEY="+r.APIKey)
	}
	if r.AuthToken != "" {
		env = append(env, "ANTHROPIC_AUTH_TOKEN="+r.AuthToken)
	}
	cmd.Env = append(env, r.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		t.Fatalf("claude: %v (stderr: %s)", err, res.Stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("claude timed out after %v; stdout: %s; stderr: %s", timeout, res.Stdout, res.Stderr)
	}
	return res
}
