//go:build !linux

package observability

import "os"

// isTerminal reports whether f is a character device: a terminal, or
// something like /dev/null, whose readers are not log collectors either.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
