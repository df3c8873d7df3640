package extproc

import (
	"context"
	"net"

	"google.golang.org/grpc/stats"

	"github.com/ccproxy/ccproxy/extproc/handoff"
)

// What the router-level processor hands to the upstream processor includes
// the Bedrock credential, so it is bound to the data plane that routed the
// request (handoff.PeerOf). A connection's peer is the process at the other
// end of a Unix socket (its pid, from SO_PEERCRED), or a TCP peer's address.

// peerAddr is the remote address of an accepted connection, carrying the
// peer's identity.
type peerAddr struct {
	net.Addr
	identity string
}

type peerConn struct {
	net.Conn
	addr peerAddr
}

func (c *peerConn) RemoteAddr() net.Addr { return c.addr }

// peerListener tags every accepted connection with its peer's identity.
type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &peerConn{Conn: c, addr: peerAddr{Addr: c.RemoteAddr(), identity: peerIdentity(c)}}, nil
}

// peerIdentity names the peer of c: "unix:pid=<pid>" for a Unix socket
// (every connection of one Envoy process agrees), "tcp:<ip>" for TCP (the
// port differs per connection), "unknown" when it cannot be learned — which
// matches only other connections that cannot be identified either.
func peerIdentity(c net.Conn) string {
	switch conn := c.(type) {
	case *net.UnixConn:
		if pid, ok := unixPeerPID(conn); ok {
			return "unix:pid=" + pid
		}
		return "unix:unknown"
	case *net.TCPConn:
		if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
			return "tcp:" + a.IP.String()
		}
	}
	return "unknown"
}

// peerTagger puts the identity of each connection's peer into the context
// of every stream on it.
type peerTagger struct{}

func (peerTagger) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if a, ok := info.RemoteAddr.(peerAddr); ok {
		return handoff.WithPeer(ctx, a.identity)
	}
	return ctx
}

func (peerTagger) HandleConn(context.Context, stats.ConnStats) {}

func (peerTagger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (peerTagger) HandleRPC(context.Context, stats.RPCStats) {}
