// Package parked lets a test wait until goroutines are blocked at a known
// place — callers waiting on a shared lookup, say — instead of sleeping and
// hoping they got there. It reads the goroutines' stack traces
// (runtime.Stack), so it needs no hook in the code under test.
package parked

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// Timeout is how long Wait waits.
const Timeout = 10 * time.Second

// Count returns how many goroutines are blocked in state, as stack traces
// name it ("select", "chan receive", "sync.Mutex.Lock", …), with fn as
// their innermost frame. fn is a function's full name as stack traces
// print it, such as "github.com/ccproxy/ccproxy/extproc/accesskey.(*Cache).Resolve";
// runtime frames are not shown in them, so a goroutine blocked in a select
// statement of fn has fn innermost.
func Count(state, fn string) int {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 7 [select, 2 minutes]:\npkg.fn(args)\n\tfile:line …"
		header, frames, ok := strings.Cut(g, "\n")
		open, end := strings.IndexByte(header, '['), strings.LastIndexByte(header, ']')
		if !ok || open < 0 || end < open {
			continue
		}
		st, _, _ := strings.Cut(header[open+1:end], ",")
		frame, _, _ := strings.Cut(frames, "\n")
		if st == state && strings.HasPrefix(frame, fn+"(") {
			count++
		}
	}
	return count
}

// Wait waits until at least n goroutines are blocked in state with fn
// innermost (see Count), and fails t if that takes longer than Timeout.
func Wait(t testing.TB, n int, state, fn string) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		got := Count(state, fn)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d goroutines blocked in %s in %s, want %d", Timeout, got, state, fn, n)
		}
		time.Sleep(time.Millisecond)
	}
}
