package envoysim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// Certificates and CA bundles from SDS files (a ConfigSource with path_config_source), the
// way Envoy reads the ext_proc cluster's mutual TLS material: the file is a
// DiscoveryResponse in YAML or JSON whose resources are Secrets, and the Secret of the
// configured name is used. Envoy watches the file (and watched_directory) and applies a
// change to new connections; envoysim reads the file at every handshake, which gives the
// same result for new connections.
// https://www.envoyproxy.io/docs/envoy/v1.40.0/configuration/security/secret#key-rotation

// sdsRef names a Secret in an SDS file.
type sdsRef struct {
	name, path string
}

// compileSDS checks an SdsSecretConfig: a name and a path_config_source (the only SDS source
// envoysim implements).
func compileSDS(c *tlsv3.SdsSecretConfig) (*sdsRef, error) {
	pcs := c.GetSdsConfig().GetPathConfigSource()
	if c.GetName() == "" || pcs == nil || pcs.GetPath() == "" {
		return nil, errors.New("envoysim implements SDS secrets from a path_config_source file only")
	}
	if c.GetSdsConfig().GetResourceApiVersion() != corev3.ApiVersion_V3 {
		return nil, errors.New("sds_config.resource_api_version must be V3")
	}
	return &sdsRef{name: c.GetName(), path: pcs.GetPath()}, nil
}

// load reads the Secret.
func (r *sdsRef) load() (*tlsv3.Secret, error) {
	b, err := os.ReadFile(r.path)
	if err != nil {
		return nil, fmt.Errorf("sds %s: %w", r.name, err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("sds %s: %s: %w", r.name, r.path, err)
	}
	var dr discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(j, &dr); err != nil {
		return nil, fmt.Errorf("sds %s: %s: %w", r.name, r.path, err)
	}
	for _, a := range dr.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("sds %s: %s: %w", r.name, r.path, err)
		}
		if s.GetName() == r.name {
			return &s, nil
		}
	}
	return nil, fmt.Errorf("sds %s: %s holds no secret of that name", r.name, r.path)
}

// certificate loads the client certificate of a tls_certificate Secret.
func (r *sdsRef) certificate() (*tls.Certificate, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	tc := s.GetTlsCertificate()
	if tc == nil {
		return nil, fmt.Errorf("sds %s: not a tls_certificate", r.name)
	}
	chain, err := readDataSource(tc.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("sds %s: certificate_chain: %w", r.name, err)
	}
	key, err := readDataSource(tc.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("sds %s: private_key: %w", r.name, err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("sds %s: %w", r.name, err)
	}
	return &cert, nil
}

// roots loads the trusted_ca of a validation_context Secret.
func (r *sdsRef) roots() (*x509.CertPool, error) {
	s, err := r.load()
	if err != nil {
		return nil, err
	}
	vc := s.GetValidationContext()
	if vc == nil || vc.GetTrustedCa() == nil {
		return nil, fmt.Errorf("sds %s: not a validation_context with trusted_ca", r.name)
	}
	pem, err := readDataSource(vc.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("sds %s: trusted_ca: %w", r.name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("sds %s: trusted_ca contains no certificates", r.name)
	}
	return pool, nil
}

// applyTo completes an upstream TLS client configuration with what tc adds to the plain
// trusted_ca check: the minimum version, a client certificate from SDS, a CA bundle from SDS
// and exact DNS SAN matchers (match_typed_subject_alt_names: any one must match).
func (tc *tlsConfig) applyTo(cfg *tls.Config) {
	if tc.minTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if ref := tc.certSDS; ref != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return ref.certificate()
		}
	}
	if tc.caSDS == nil && len(tc.sanExact) == 0 {
		return
	}
	plain := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if tc.caSDS != nil {
			roots, err := tc.caSDS.roots()
			if err != nil {
				return err
			}
			if err := verifyPeer(cs, roots, ""); err != nil {
				return err
			}
		} else if plain != nil {
			if err := plain(cs); err != nil {
				return err
			}
		}
		if len(tc.sanExact) == 0 {
			return nil
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("CERTIFICATE_VERIFY_FAILED: no peer certificate")
		}
		for _, name := range cs.PeerCertificates[0].DNSNames {
			for _, want := range tc.sanExact {
				if name == want {
					return nil
				}
			}
		}
		return errors.New("CERTIFICATE_VERIFY_FAILED: no subject alternative name matches")
	}
}

// envoyGRPCCreds are TLS credentials for an Envoy gRPC client: the connection is verified
// once at the handshake (SNI, chain, SAN matchers), and the :authority of each call (the
// cluster name, or ext_proc's authority) is not checked against the certificate, as Envoy
// does not check it: grpc-go asks the handshake's AuthInfo to validate an overridden
// authority, and the wrapped AuthInfo accepts it.
type envoyGRPCCreds struct {
	credentials.TransportCredentials
}

func (c envoyGRPCCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return conn, plainAuthInfo{info}, nil
}

func (c envoyGRPCCreds) Clone() credentials.TransportCredentials {
	return envoyGRPCCreds{c.TransportCredentials.Clone()}
}

type plainAuthInfo struct{ credentials.AuthInfo }

// ValidateAuthority accepts every authority (credentials.AuthorityValidator).
func (plainAuthInfo) ValidateAuthority(string) error { return nil }
