// Package imagebuild builds ccproxy's container image from a static ccproxy
// binary without a container runtime: one layer holding the binary, a CA
// bundle and the passwd and group files of the non-root user, and an OCI
// image config whose entrypoint is the binary. It is the image the
// Dockerfile builds (there on the distroless static base, which holds the
// same three things), made where no Docker daemon or registry is at hand.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and identity inside the image.
const (
	// BinaryPath is the entrypoint.
	BinaryPath = "/usr/local/bin/ccproxy"
	// CABundlePath is where Go's crypto/x509 and CCPROXY_UPSTREAM_CA_FILE's
	// default look for the trusted roots on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// UID and GID are distroless's "nonroot" user, which the Kubernetes
	// manifests run as.
	UID = 65532
	GID = 65532
	// User is the image config's user: numeric, so that the kubelet can
	// verify runAsNonRoot without reading /etc/passwd.
	User = "65532:65532"
	// VersionLabel is the OCI annotation key carrying the stamped version.
	VersionLabel = "org.opencontainers.image.version"
)

// Spec is what goes into an image.
type Spec struct {
	// Binary is a statically linked ccproxy for Arch.
	Binary []byte
	// CABundle is a PEM bundle of trusted roots (Debian's
	// /etc/ssl/certs/ca-certificates.crt on the build machine).
	CABundle []byte
	// Version is the version stamped into Binary (-X main.version).
	Version string
	// Arch is the GOARCH of Binary (amd64, arm64).
	Arch string
	// Created is the image's creation time; the zero value is the Unix
	// epoch, which keeps the digest a function of the inputs only.
	Created time.Time
	// Revision is the commit stamped into Binary (-X main.commit), the
	// org.opencontainers.image.revision label, if any.
	Revision string
	// Source is the org.opencontainers.image.source label, if any.
	Source string
}

// passwd and group name the non-root user for tools that look it up; the
// image config uses the numeric ids.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// Build returns the image described by s.
func Build(s Spec) (v1.Image, error) {
	if len(s.Binary) == 0 || len(s.CABundle) == 0 || s.Version == "" || s.Arch == "" {
		return nil, errors.New("imagebuild: binary, CA bundle, version and architecture are required")
	}
	created := s.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	layerTar, err := rootfs(s, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("imagebuild: layer: %w", err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "ccproxy imagebuild", Comment: "ccproxy " + s.Version},
	})
	if err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = s.Arch
	cf.Created = v1.Time{Time: created}
	labels := map[string]string{
		VersionLabel:                     s.Version,
		"org.opencontainers.image.title": "ccproxy",
	}
	if s.Revision != "" {
		labels["org.opencontainers.image.revision"] = s.Revision
	}
	if s.Source != "" {
		labels["org.opencontainers.image.source"] = s.Source
	}
	cf.Config = v1.Config{
		Entrypoint: []string{BinaryPath},
		User:       User,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("imagebuild: config: %w", err)
	}
	return mutate.Annotations(img, map[string]string{VersionLabel: s.Version}).(v1.Image), nil
}

// rootfs is the layer's tar: directories, then files, all owned by root
// and unwritable by the user the image runs as.
func rootfs(s Spec, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, uid, gid int, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid, ModTime: mtime, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "usr/", "usr/local/", "usr/local/bin/"} {
		if err := dir(d, 0, 0, 0o755); err != nil {
			return nil, err
		}
	}
	// The user's home, and a /tmp for anything that insists on one (the
	// Kubernetes manifests mount the root file system read-only).
	if err := dir("home/", 0, 0, 0o755); err != nil {
		return nil, err
	}
	if err := dir("home/nonroot/", UID, GID, 0o700); err != nil {
		return nil, err
	}
	if err := dir("tmp/", 0, 0, 0o1777); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/group", 0o644, []byte(group)},
		{"etc/passwd", 0o644, []byte(passwd)},
		{CABundlePath[1:], 0o644, s.CABundle},
		{BinaryPath[1:], 0o755, s.Binary},
	} {
		if err := file(f.name, f.mode, f.data); err != nil {
			return nil, fmt.Errorf("imagebuild: %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
