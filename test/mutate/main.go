// Command mutate checks that the test suite notices when the conditions the
// gateway's correctness rests on are broken. For each mutation in the list
// (mutations.go) it replaces one exact snippet of one source file, runs the
// tests of the package that owns the code, and reports whether they failed
// ("caught") or passed ("missed").
//
// Files are never modified: the mutated copy is handed to the Go toolchain
// with -overlay, so an interrupted run leaves the tree as it was and runs can
// go in parallel with other work.
//
//	go run ./test/mutate              # every mutation (make mutate)
//	go run ./test/mutate -run budget  # the mutations whose name matches
//	go run ./test/mutate -list        # the list, without running anything
//
// It exits 1 when a mutation is missed, does not compile, or no longer
// matches its file exactly once (the list must follow the code).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		only    = flag.String("run", "", "run only the mutations whose name matches this regular expression")
		list    = flag.Bool("list", false, "print the mutations and exit")
		timeout = flag.Duration("timeout", 10*time.Minute, "time limit for one mutation's tests")
		verbose = flag.Bool("v", false, "print the test output of missed and broken mutations")
	)
	flag.Parse()
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		return 2
	}
	var re *regexp.Regexp
	if *only != "" {
		if re, err = regexp.Compile(*only); err != nil {
			fmt.Fprintln(os.Stderr, "mutate: -run:", err)
			return 2
		}
	}
	var selected []Mutation
	for _, m := range Mutations {
		if re == nil || re.MatchString(m.Name) {
			selected = append(selected, m)
		}
	}
	if *list {
		for _, m := range selected {
			fmt.Printf("%-40s %s → %s\n", m.Name, m.File, strings.Join(m.Packages, " "))
		}
		return 0
	}
	tmp, err := os.MkdirTemp("", "ccproxy-mutate-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		return 2
	}
	defer os.RemoveAll(tmp)

	var caught, missed, broken int
	start := time.Now()
	fmt.Printf("%-40s %-8s %s\n", "MUTATION", "RESULT", "TIME")
	for i, m := range selected {
		t := time.Now()
		res, out := apply(root, filepath.Join(tmp, fmt.Sprint(i)), m, *timeout)
		switch res {
		case resultCaught:
			caught++
		case resultMissed:
			missed++
		default:
			broken++
		}
		fmt.Printf("%-40s %-8s %s\n", m.Name, res, time.Since(t).Round(100*time.Millisecond))
		if res != resultCaught && (*verbose || res != resultMissed) {
			fmt.Println(indent(out))
		}
	}
	fmt.Printf("\n%d mutations: %d caught, %d missed, %d broken (%s)\n",
		len(selected), caught, missed, broken, time.Since(start).Round(time.Second))
	if missed > 0 || broken > 0 {
		return 1
	}
	return 0
}

type result string

const (
	resultCaught result = "caught"
	resultMissed result = "MISSED"
	resultBroken result = "BROKEN" // the mutation does not apply or compile
)

// apply runs m's packages' tests with the mutated file overlaid.
func apply(root, dir string, m Mutation, timeout time.Duration) (result, string) {
	path := filepath.Join(root, m.File)
	mutated, err := m.Apply(path)
	if err != nil {
		return resultBroken, err.Error()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return resultBroken, err.Error()
	}
	mutatedPath := filepath.Join(dir, filepath.Base(m.File))
	if err := os.WriteFile(mutatedPath, mutated, 0o644); err != nil {
		return resultBroken, err.Error()
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {path: mutatedPath}})
	overlayPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayPath, overlay, 0o644); err != nil {
		return resultBroken, err.Error()
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Vet would reject some mutants for reasons unrelated to the tests
	// (e.g. an unused result), so only the tests judge them.
	build := exec.CommandContext(ctx, "go", "test", "-count=1", "-vet=off", "-run", "^$", "-overlay", overlayPath)
	build.Args = append(build.Args, m.Packages...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return resultBroken, "does not compile:\n" + string(out)
	}
	args := []string{"test", "-count=1", "-vet=off", "-failfast", "-overlay", overlayPath}
	if m.Run != "" {
		args = append(args, "-run", m.Run)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, m.Packages...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CCPROXY_REQUIRE_FAULT_TESTS=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		// A mutation that makes the tests hang is caught: the suite would
		// time out in CI.
		return resultCaught, "timed out"
	}
	if err == nil {
		return resultMissed, string(out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return resultBroken, err.Error()
	}
	return resultCaught, string(out)
}

// moduleRoot is the directory of the go.mod that holds this command.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the ccproxy module")
	}
	return filepath.Dir(mod), nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	var b bytes.Buffer
	for _, line := range strings.Split(s, "\n") {
		b.WriteString("    ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}
