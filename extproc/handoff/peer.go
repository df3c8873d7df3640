package handoff

import "context"

// A Request carries the secrets of a Bedrock call (the decrypted API key is
// applied from it), so only the data plane that stored it may use it: each
// gRPC connection is tagged with the identity of its peer — the process at
// the other end of a Unix socket, the address of a TCP peer — and a
// Request is found only from a stream whose peer matches the one that
// stored it. Envoy's router-level and upstream filters of one request run
// in the same Envoy process, whichever connection each uses, so they always
// match; another process that reaches the socket does not.

type peerKey struct{}

// WithPeer returns ctx tagged with the peer identity of its connection.
func WithPeer(ctx context.Context, peer string) context.Context {
	return context.WithValue(ctx, peerKey{}, peer)
}

// PeerOf returns the peer identity ctx was tagged with, "" when none.
func PeerOf(ctx context.Context) string {
	p, _ := ctx.Value(peerKey{}).(string)
	return p
}
