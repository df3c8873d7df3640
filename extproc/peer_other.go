//go:build !linux

package extproc

import "net"

// unixPeerPID cannot learn the peer process outside Linux: every Unix socket
// peer is then "unix:unknown".
func unixPeerPID(*net.UnixConn) (string, bool) { return "", false }
