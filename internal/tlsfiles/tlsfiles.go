// Package tlsfiles owns the mutual-TLS configurations ccproxy builds from PEM files that are
// rotated on disk — a Kubernetes Secret mounted as a directory, renewed by cert-manager or an
// operator: the xDS server's (ServerConfig) and the configuration of its clients
// (ClientConfig). The files are checked at every handshake and re-read when they changed, so a
// renewed certificate or CA bundle is used without a restart; a change that does not load (a
// file caught half-written) keeps the last good material and is reported.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one side of a mutual-TLS connection.
type Files struct {
	// CertFile is this side's certificate chain, leaf first.
	CertFile string
	// KeyFile is the private key of CertFile's leaf.
	KeyFile string
	// CAFile is the bundle the peer's certificate must chain to.
	CAFile string
}

// Complete reports whether all three files are named.
func (f Files) Complete() bool { return f.CertFile != "" && f.KeyFile != "" && f.CAFile != "" }

// Any reports whether any of the files is named.
func (f Files) Any() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

// alpnH2 is the protocol gRPC negotiates; grpc-go refuses TLS connections without it.
const alpnH2 = "h2"

// ServerConfig returns a TLS 1.3 server configuration that presents CertFile, requires a client
// certificate chaining to CAFile (a client without one fails the handshake) and offers ALPN h2.
// The files must load now; later changes are picked up at the next handshake, and reload
// failures are passed to onReloadError (nil ignores them) while the previous files stay in use.
func ServerConfig(f Files, onReloadError func(error)) (*tls.Config, error) {
	r, err := newReloader(f, onReloadError)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{alpnH2},
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.roots,
			}, nil
		},
	}, nil
}

// ClientConfig returns a TLS 1.3 client configuration that presents CertFile and accepts only
// a server certificate that chains to CAFile and is valid for serverName — the host the client
// connects to: a DNS name or an IP address, which the certificate must then carry as an IP
// SAN. An empty serverName falls back to the SNI name of the handshake; with neither (an IP
// target dialled without serverName: Go sends no SNI for an IP) every server is refused rather
// than any certificate of the CA accepted. Loading and reloading are as for ServerConfig.
func ClientConfig(f Files, serverName string, onReloadError func(error)) (*tls.Config, error) {
	r, err := newReloader(f, onReloadError)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert := r.current().cert
			return &cert, nil
		},
		// The CA bundle can change while the process runs, which RootCAs cannot follow: Go's
		// own verification is replaced by the same check against the current bundle.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tlsfiles: the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				// x509 skips the name check for an empty DNSName.
				return errors.New("tlsfiles: no server name to check the server certificate against (an IP address target needs the name given)")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         r.current().roots,
				Intermediates: inter,
				DNSName:       name,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("tlsfiles: server certificate: %w", err)
			}
			return nil
		},
	}, nil
}

// material is one loaded set of files.
type material struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

// stamp identifies a file's content cheaply: a rewritten or replaced file changes it.
type stamp struct {
	size    int64
	modTime time.Time
}

// reloader holds the last good material and re-reads the files when their stamps change.
type reloader struct {
	files Files
	onErr func(error)

	mu     sync.Mutex
	stamps [3]stamp
	cur    *material
	failed [3]stamp // stamps of the last failed load, reported once
}

func newReloader(f Files, onErr func(error)) (*reloader, error) {
	if !f.Complete() {
		return nil, errors.New("tlsfiles: a certificate, its key and a CA bundle are all required")
	}
	if onErr == nil {
		onErr = func(error) {}
	}
	r := &reloader{files: f, onErr: onErr}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	m, err := load(f)
	if err != nil {
		return nil, err
	}
	r.stamps, r.cur = st, m
	return r, nil
}

func (r *reloader) stat() ([3]stamp, error) {
	var out [3]stamp
	for i, name := range []string{r.files.CertFile, r.files.KeyFile, r.files.CAFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return out, fmt.Errorf("tlsfiles: %w", err)
		}
		out[i] = stamp{fi.Size(), fi.ModTime()}
	}
	return out, nil
}

// current returns the material to use for a handshake, reloading it first when a file changed.
func (r *reloader) current() *material {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stat()
	if err == nil && st == r.stamps {
		return r.cur
	}
	if err == nil {
		var m *material
		if m, err = load(r.files); err == nil {
			r.stamps, r.cur = st, m
			return m
		}
	}
	if st != r.failed {
		r.failed = st
		r.onErr(fmt.Errorf("tlsfiles: keeping the previous certificates: %w", err))
	}
	return r.cur
}

func load(f Files) (*material, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: certificate %s, key %s: %w", f.CertFile, f.KeyFile, err)
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsfiles: CA bundle %s holds no PEM certificate", f.CAFile)
	}
	return &material{cert: cert, roots: roots}, nil
}
