package main

import (
	"bytes"
	"context"
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
	const first, last, beforeLast = "00001_core.sql", "00010_admin_login_throttle.sql", "00009_usage_fallback_hourly.sql"
	steps := []struct {
		args      []string
		wantLines []string
	}{
		{[]string{"migrate", "status"}, []string{"1 " + first + " pending", "10 " + last + " pending"}},
		{[]string{"migrate", "up"}, []string{"up " + first, "up " + last}},
		{[]string{"migrate", "up"}, []string{"nothing to do"}},
		{[]string{"migrate", "down"}, []string{"down " + last}},
		{[]string{"migrate", "down", "--to", "0"}, []string{"down " + beforeLast, "down " + first}},
		{[]string{"migrate", "status"}, []string{"1 " + first + " pending"}},
		{[]string{"migrate", "up"}, []string{"up " + first, "up " + last}},
		{[]string{"migrate", "status"}, []string{"1 " + first + " applied", "10 " + last + " applied"}},
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
	if err != nil || !strings.HasPrefix(out, "ccproxy dev (go") {
		t.Fatalf("version = %q, %v", out, err)
	}
}
