// Command ccproxy-statusline prints the developer's status line for Claude
// Code's statusLine setting — the line `ccproxy statusline` prints — from a
// program of the standard library and internal/statusline alone, so that
// it starts in a few milliseconds: Claude Code runs it on every status
// update, and the whole ccproxy binary spends tens of milliseconds
// initialising its dependencies before main runs.
//
// Usage:
//
//	ccproxy-statusline [--timeout 300ms]
//
// It reads ANTHROPIC_BASE_URL and ANTHROPIC_CUSTOM_HEADERS as Claude Code
// does, CCPROXY_STATUSLINE_TIMEOUT when --timeout is not given, and
// Claude Code's status JSON on stdin.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ccproxy/ccproxy/internal/statusline"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// run is the program with its process interfaces as arguments; it returns
// the exit code: 0, or 2 for a bad flag or timeout.
func run(args []string, getenv func(string) string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ccproxy-statusline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", statusline.DefaultTimeout,
		"longest the command waits for the gateway before printing its fallback line (also "+statusline.EnvTimeout+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ccproxy-statusline: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "timeout" })
	if !given {
		d, err := statusline.Timeout(getenv)
		if err != nil {
			fmt.Fprintln(stderr, "ccproxy-statusline:", err)
			return 2
		}
		*timeout = d
	}
	if err := statusline.CheckTimeout(*timeout); err != nil {
		fmt.Fprintln(stderr, "ccproxy-statusline:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var in io.Reader
	if stdin != nil && !isTerminal(stdin) {
		in = stdin
	}
	fmt.Fprintln(stdout, statusline.Line(ctx, statusline.Options{Getenv: getenv, Stdin: in, Location: time.Local}))
	return 0
}

// isTerminal reports whether f is a character device (an interactive
// terminal): then nobody writes Claude Code's JSON to it, and reading it
// would wait for the user.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
