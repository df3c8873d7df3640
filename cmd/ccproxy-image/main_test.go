package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ccproxy/ccproxy/internal/imagebuild"
)

const (
	testVersion = "v9.8.7-imagetest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// buildBinary builds ccproxy the way `make image` does: static, for Linux,
// with the version stamped.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ccproxy")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion+" -X main.commit="+testCommit, "-o", bin, "github.com/ccproxy/ccproxy/cmd/ccproxy")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestImage writes the image as `make image` does and checks what a
// container runtime would use: the config (entrypoint, non-root user,
// version label), the file system (the binary, the CA bundle, the user; no
// shell), that the binary needs no dynamic loader, and that the
// entrypoint prints the stamped version when run as the image's user in
// the image's root file system.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is a Linux image")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	out, archive := filepath.Join(dir, "layout"), filepath.Join(dir, "image.tar")
	args := []string{"-binary", bin, "-arch", runtime.GOARCH, "-version", testVersion, "-revision", testCommit, "-out", out, "-tar", archive, "-tag", "ccproxy:test"}
	if err := run(args); err != nil {
		t.Fatal(err)
	}

	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].MediaType != types.OCIManifestSchema1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "test" {
		t.Fatalf("layout index: %+v", im.Manifests)
	}
	img, err := p.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/ccproxy"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want the numeric non-root 65532:65532", cf.Config.User)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != testVersion || cf.Config.Labels["org.opencontainers.image.revision"] != testCommit {
		t.Errorf("labels %v", cf.Config.Labels)
	}

	files := rootfs(t, img)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt", "home", "home/nonroot", "tmp", "usr", "usr/local", "usr/local/bin", "usr/local/bin/ccproxy"}
	if !slices.Equal(names, want) {
		t.Errorf("image files %q, want %q (no shell, nothing else)", names, want)
	}
	if h := files["usr/local/bin/ccproxy"]; h.hdr.Mode != 0o755 || h.hdr.Uid != 0 {
		t.Errorf("binary mode %o owner %d: want 0755 owned by root (not writable by the user)", h.hdr.Mode, h.hdr.Uid)
	}
	if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") {
		t.Error("/etc/passwd has no nonroot user")
	}
	if !strings.Contains(string(files["etc/ssl/certs/ca-certificates.crt"].data), "BEGIN CERTIFICATE") {
		t.Error("no CA bundle")
	}
	// Static: no program interpreter (dynamic loader) to find.
	ef, err := elf.NewFile(bytes.NewReader(files["usr/local/bin/ccproxy"].data))
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked")
		}
	}

	// The tarball holds the same image.
	tag, _ := name.NewTag("ccproxy:test")
	fromTar, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := fromTar.Digest()
	c1, _ := img.ConfigName()
	c2, _ := fromTar.ConfigName()
	if c1 != c2 {
		t.Errorf("tarball config %s, layout config %s", c2, c1)
	}
	// The same inputs give the same digest.
	again, err := imagebuild.Build(imagebuild.Spec{Binary: files["usr/local/bin/ccproxy"].data, CABundle: files["etc/ssl/certs/ca-certificates.crt"].data, Version: testVersion, Revision: testCommit, Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := again.Digest(); d3 != d1 {
		t.Errorf("rebuilding gives %s, first build %s", d3, d1)
	}
	t.Logf("image %s (layout), %s (tarball manifest)", d1, d2)

	// Run it: the entrypoint with the argument `version`, in the unpacked
	// root file system as the image's user and environment, as a runtime
	// would (chroot and setuid need root; otherwise the binary runs as is).
	root := t.TempDir()
	unpack(t, img, root)
	cmd := exec.Command(cf.Config.Entrypoint[0], "version")
	cmd.Env = cf.Config.Env
	cmd.Dir = "/"
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	} else {
		t.Log("not root: running the unpacked binary outside a chroot")
		cmd.Path = filepath.Join(root, cf.Config.Entrypoint[0])
	}
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ccproxy version in the image: %v\n%s", err, got)
	}
	if lines := strings.Split(string(got), "\n"); len(lines) < 2 || lines[0] != "ccproxy "+testVersion || lines[1] != "commit: "+testCommit {
		t.Errorf("ccproxy version printed %q, want the stamped %s and %s", got, testVersion, testCommit)
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func rootfs(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = entry{h, b}
	}
}

func unpack(t *testing.T, img v1.Image, root string) {
	t.Helper()
	for n, e := range rootfs(t, img) {
		p := filepath.Join(root, n)
		if e.hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, e.data, os.FileMode(e.hdr.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	// The unpacked directories must be enterable by the image's user.
	if err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.IsDir() {
			return err
		}
		return os.Chmod(p, 0o755)
	}); err != nil {
		t.Fatal(err)
	}
}
