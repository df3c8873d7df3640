package extproc

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// The Unix socket is the ext_proc server's only authentication in the sidecar deployment:
// whoever can connect to it can play Envoy's filters and be handed the decrypted Bedrock
// credential of any valid access key. So it is created with an explicit mode and group
// rather than the process umask's, atomically (never visible under a looser mode), in a
// directory that is extproc's, root's or writable by nobody else. A directory every user may
// write to without the sticky bit is reported through ListenOptions.Warn rather than refused:
// it is what a Kubernetes emptyDir volume is (mode 0777), where the only other writers are the
// pod's own containers — Envoy, which is trusted anyway.

// DefaultSocketMode is the Unix socket's mode when ListenOptions leaves it zero: the owner
// and the group (Envoy's) may connect, nobody else.
const DefaultSocketMode fs.FileMode = 0o660

// ListenOptions shape the Unix socket ListenWith creates.
type ListenOptions struct {
	// SocketMode is the socket file's permission bits (default DefaultSocketMode).
	SocketMode fs.FileMode
	// SocketGroup is the group (a name or a numeric id) given the socket, so that Envoy's
	// user can connect through the group bits; "" keeps the process's group.
	SocketGroup string
	// Warn receives what is worth an operator's attention about the socket's directory;
	// nil ignores it.
	Warn func(msg string)
}

// checkSocketDir refuses a socket directory owned by another user than this process's or
// root, and warns about one that every user may write to without the sticky bit (which would
// keep them from removing or renaming our file).
func checkSocketDir(dir string, warn func(string)) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("extproc: socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("extproc: socket directory %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := int(st.Uid); uid != 0 && uid != os.Getuid() {
			return fmt.Errorf("extproc: socket directory %s belongs to uid %d, not to extproc's user (%d) or root: its owner could replace the socket", dir, uid, os.Getuid())
		}
	}
	if m := fi.Mode(); m.Perm()&0o002 != 0 && m&fs.ModeSticky == 0 && warn != nil {
		warn(fmt.Sprintf("extproc socket directory %s (mode %v) is writable by every user, who could replace the socket with their own; acceptable for a volume only the pod's containers mount (a Kubernetes emptyDir), otherwise use a directory only extproc's user and group can write to", dir, m.Perm()))
	}
	return nil
}

// listenSocket listens on path with o's mode and group. The socket is bound in a fresh
// private directory beside path, given its mode and group there, and renamed into place: at
// no moment can anyone connect to it under the umask's looser mode.
func listenSocket(path string, o ListenOptions) (net.Listener, error) {
	mode := o.SocketMode
	if mode == 0 {
		mode = DefaultSocketMode
	}
	gid := -1
	if o.SocketGroup != "" {
		var err error
		if gid, err = lookupGroup(o.SocketGroup); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".s")
	if err != nil {
		return nil, fmt.Errorf("extproc: listen: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	lis, err := net.Listen("unix", tmpPath)
	if err != nil {
		return nil, fmt.Errorf("extproc: listen: %w", err)
	}
	ul := lis.(*net.UnixListener)
	// Closing unlinks the final path (socketListener), not the temporary one.
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ul.Close()
		return nil, fmt.Errorf("extproc: listen: %w", err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmpPath, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmpPath, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fail(err)
	}
	return &socketListener{UnixListener: ul, path: path}, nil
}

// lookupGroup resolves a group name or numeric id.
func lookupGroup(g string) (int, error) {
	if id, err := strconv.Atoi(g); err == nil && id >= 0 {
		return id, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("extproc: socket group: %w", err)
	}
	id, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return 0, fmt.Errorf("extproc: socket group %s: gid %q", g, grp.Gid)
	}
	return id, nil
}

// socketListener removes its socket file when closed.
type socketListener struct {
	*net.UnixListener
	path string
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}
