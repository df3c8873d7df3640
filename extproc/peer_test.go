package extproc

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/grpc/stats"

	"github.com/ccproxy/ccproxy/extproc/handoff"
)

// TestPeerIdentity: every connection of one process over a Unix socket has
// the same identity (its pid), so Envoy's router-level and upstream streams
// match whichever connection each uses; TCP peers are told apart by
// address, not port.
func TestPeerIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	tests := []struct {
		name    string
		lis     net.Listener
		network string
		want    string
	}{
		{"unix", ul, "unix", "unix:pid=" + strconv.Itoa(os.Getpid())},
		{"tcp", tl, "tcp", "tcp:127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl := peerListener{tc.lis}
			for i := 0; i < 2; i++ {
				c, err := net.Dial(tc.network, tc.lis.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				sc, err := pl.Accept()
				if err != nil {
					t.Fatal(err)
				}
				ctx := peerTagger{}.TagConn(context.Background(), &stats.ConnTagInfo{RemoteAddr: sc.RemoteAddr()})
				if got := handoff.PeerOf(ctx); got != tc.want {
					t.Fatalf("connection %d: peer %q, want %q", i, got, tc.want)
				}
				c.Close()
				sc.Close()
			}
		})
	}
}
