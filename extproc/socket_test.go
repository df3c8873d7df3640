package extproc

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestListenSocketMode: the socket gets the configured mode and group whatever the umask,
// which alone would leave it connectable by every local user (0777 &^ umask).
func TestListenSocketMode(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	dir := t.TempDir()
	gid := strconv.Itoa(os.Getgid())
	for _, tc := range []struct {
		name string
		opts ListenOptions
		want fs.FileMode
	}{
		{"default 0660", ListenOptions{}, 0o660},
		{"owner only", ListenOptions{SocketMode: 0o600}, 0o600},
		{"group by id", ListenOptions{SocketMode: 0o660, SocketGroup: gid}, 0o660},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "x.sock")
			lis, err := ListenWith("unix://"+path, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != tc.want {
				t.Errorf("socket mode %v, want socket %v", fi.Mode(), tc.want)
			}
			if st := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(st.Gid)) != gid {
				t.Errorf("socket group %d, want %s", st.Gid, gid)
			}
			if err := lis.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("socket left behind after Close: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Errorf("directory not clean after Close: %v", entries)
			}
		})
	}
}

// TestListenSocketDirectory: a directory another user owns (who could put their own socket
// in place of extproc's) is refused; one every user may write to without the sticky bit is
// reported (a Kubernetes emptyDir is one: only the pod's containers write there).
func TestListenSocketDirectory(t *testing.T) {
	for _, tc := range []struct {
		mode fs.FileMode
		warn bool
	}{
		{0o700, false},
		{0o770, false},
		{0o777, true},
		{0o777 | fs.ModeSticky, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			var warnings []string
			lis, err := ListenWith("unix://"+filepath.Join(dir, "x.sock"), ListenOptions{Warn: func(m string) { warnings = append(warnings, m) }})
			if err != nil {
				t.Fatal(err)
			}
			lis.Close()
			if got := len(warnings) == 1 && strings.Contains(warnings[0], "writable by every user"); got != tc.warn {
				t.Errorf("warnings %q, want a warning: %v", warnings, tc.warn)
			}
		})
	}
	if _, err := ListenWith("unix:///nonexistent-dir/x.sock", ListenOptions{}); err == nil {
		t.Error("a missing directory: no error")
	}
	if _, err := ListenWith("unix://"+t.TempDir()+"/x.sock", ListenOptions{SocketGroup: "no-such-group-ccproxy"}); err == nil {
		t.Error("an unknown group: no error")
	}
}

// TestSocketDirOwner: a directory owned by another user than extproc's or root is refused.
func TestSocketDirOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 12345, -1); err != nil {
		t.Fatal(err)
	}
	if err := checkSocketDir(dir, nil); err == nil || !strings.Contains(err.Error(), "belongs to uid 12345") {
		t.Fatalf("err = %v, want the owner refused", err)
	}
}
