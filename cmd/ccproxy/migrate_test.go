package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/testenv"
)

// run executes the ccproxy command line in-process and returns stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand(nil)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestMigrateUpDownUp(t *testing.T) {
	dsn := testenv.Postgres(t)
	t.Setenv("DATABASE_URL", dsn)
	t.Setenv("CCPROXY_LOG_FORMAT", "json")

	// Lines are compared with runs of spaces collapsed: the status table's
	// column widths follow the longest migration name.
	// The names come from the migrations directory, so a new migration
	// moves "last" rather than breaking the test.
	names, err := filepath.Glob(filepath.Join("..", "..", "internal", "store", "migrations", "*.sql"))
	if err != nil || len(names) < 2 {
		t.Fatalf("migrations: %v %v", names, err)
	}
	sort.Strings(names)
	n := len(names)
	first, last, beforeLast := filepath.Base(names[0]), filepath.Base(names[n-1]), filepath.Base(names[n-2])
	// The newest migration's version is its file's number (numbers may
	// have gaps, so it is not the count of files).
	v, err := strconv.Atoi(strings.SplitN(last, "_", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	count := strconv.Itoa(v)
	steps := []struct {
		args      []string
		wantLines []string
	}{
		{[]string{"migrate", "status"}, []string{"1 " + first + " pending", count + " " + last + " pending"}},
		{[]string{"migrate", "up"}, []string{"up " + first, "up " + last}},
		{[]string{"migrate", "up"}, []string{"nothing to do"}},
		{[]string{"migrate", "down"}, []string{"down " + last}},
		{[]string{"migrate", "down", "--to", "0"}, []string{"down " + beforeLast, "down " + first}},
		{[]string{"migrate", "status"}, []string{"1 " + first + " pending"}},
		{[]string{"migrate", "up"}, []string{"up " + first, "up " + last}},
		{[]string{"migrate", "status"}, []string{"1 " + first + " applied", count + " " + last + " applied"}},
	}
	for _, s := range steps {
		out, err := run(t, s.args...)
		if err != nil {
			t.Fatalf("%v: %v", s.args, err)
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		collapsed := strings.Join(lines, "\n")
		for _, want := range s.wantLines {
			if !strings.Contains(collapsed, want) {
				t.Fatalf("%v output lacks %q:\n%s", s.args, want, out)
			}
		}
	}
}

func TestMigrateRejectsBadSettings(t *testing.T) {
	t.Setenv("DATABASE_URL", "mysql://nope")
	_, err := run(t, "migrate", "up")
	if err == nil || !strings.Contains(err.Error(), "--database-url / DATABASE_URL") {
		t.Fatalf("err = %v", err)
	}
	t.Setenv("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/x")
	if _, err := run(t, "migrate", "down", "--to", "-3"); err == nil || !strings.Contains(err.Error(), "--to must be 0") {
		t.Fatalf("err = %v", err)
	}
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	b := currentBuild()
	want := "ccproxy dev\ncommit: " + b.Commit + "\ngo: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if err != nil || out != want {
		t.Fatalf("version = %q, %v; want %q", out, err, want)
	}
}

// TestVersionStampedByMakefile builds the binary with the Makefile's
// -ldflags and checks that version prints what was stamped.
func TestVersionStampedByMakefile(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ccproxy")
	ldflags := "-X main.version=v1.2.3-4-gabcdef0 -X main.commit=abcdef0123456789"
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	want := "ccproxy v1.2.3-4-gabcdef0\ncommit: abcdef0123456789\ngo: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if err != nil || string(out) != want {
		t.Fatalf("version = %q, %v; want %q", out, err, want)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-X main.version=$(VERSION)", "-X main.commit=$(COMMIT)", "git describe --tags --match 'v[0-9]*'"} {
		if !strings.Contains(string(mk), s) {
			t.Errorf("Makefile does not stamp %q", s)
		}
	}
}
