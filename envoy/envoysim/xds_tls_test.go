package envoysim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestXDSMutualTLS: with XDSCredentials, envoysim reaches a control plane
// that requires a client certificate from its CA, as Envoy does with the
// bootstrap's xds cluster.
func TestXDSMutualTLS(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ca := newCA(t, "xds root")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	der := must(x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca.cert, &key.PublicKey, ca.key))
	client := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	snap, err := cachev3.NewSnapshot("1", xdsResources(t, up.addr(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.SetSnapshot(ctx, "node-1", snap); err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, "ccproxy-controlplane")},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, cache, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	sim, err := New(Options{XDSAddress: ln.Addr().String(), NodeID: "node-1", Logger: testLogger(t),
		XDSCredentials: credentials.NewTLS(&tls.Config{ServerName: "ccproxy-controlplane", RootCAs: pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS13})})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, simCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sim.Run(simCtx) }()
	defer func() { simCancel(); <-done }()
	select {
	case <-sim.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("no configuration over mutual TLS")
	}
	if got := do(t, "GET", "http://"+sim.Addr()+"/", "", nil); got.status != 200 || got.body != `{"ok":true}` {
		t.Fatalf("got %d %q", got.status, got.body)
	}
}
