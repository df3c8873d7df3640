package extproc

import (
	"net"
	"strconv"
	"syscall"
)

// unixPeerPID returns the pid of the process at the other end of c
// (SO_PEERCRED, fixed when the connection was made).
func unixPeerPID(c *net.UnixConn) (string, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return "", false
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil || cred == nil {
		return "", false
	}
	return strconv.Itoa(int(cred.Pid)), true
}
