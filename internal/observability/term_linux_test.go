package observability

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLogFormatOnATerminal: auto is text on a terminal, here the
// subordinate side of a pseudo-terminal the test opens.
func TestLogFormatOnATerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	for _, tt := range []struct{ format, want string }{
		{"auto", "text"},
		{"json", "json"},
		{"text", "text"},
	} {
		if got, err := LogFormat(tty, tt.format); err != nil || got != tt.want {
			t.Errorf("LogFormat(terminal, %q) = %q, %v; want %q", tt.format, got, err, tt.want)
		}
	}
}
