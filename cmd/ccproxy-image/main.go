// Command ccproxy-image writes ccproxy's container image from a static
// ccproxy binary, without a container runtime (`make image` runs it): an
// OCI image layout directory, which registries' clients push as it is
// (crane push, skopeo copy oci:...), and optionally a tarball that
// `docker load` and `kind load image-archive` read. It prints the image's
// digest, which the Kubernetes overlays pin.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ccproxy/ccproxy/internal/imagebuild"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ccproxy-image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ccproxy-image", flag.ContinueOnError)
	binary := fs.String("binary", "", "static linux ccproxy binary (CGO_ENABLED=0 GOOS=linux)")
	arch := fs.String("arch", "", "GOARCH of the binary")
	version := fs.String("version", "", "version stamped into the binary (-X main.version)")
	ca := fs.String("ca", imagebuild.CABundlePath, "PEM bundle of trusted roots to put into the image")
	out := fs.String("out", "", "OCI image layout directory to write (replaced)")
	archive := fs.String("tar", "", "also write a docker-load tarball here")
	tag := fs.String("tag", "ccproxy:dev", "image name and tag in the tarball and the layout's ref.name")
	source := fs.String("source", "", "org.opencontainers.image.source label")
	revision := fs.String("revision", "", "the commit stamped into the binary (-X main.commit), for the org.opencontainers.image.revision label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" || *arch == "" || *version == "" || *out == "" || fs.NArg() > 0 {
		return fmt.Errorf("usage: ccproxy-image -binary FILE -arch GOARCH -version V -out DIR [-tar FILE] [-tag NAME:TAG]")
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return err
	}
	bundle, err := os.ReadFile(*ca)
	if err != nil {
		return err
	}
	img, err := imagebuild.Build(imagebuild.Spec{Binary: bin, CABundle: bundle, Version: *version, Revision: *revision, Arch: *arch, Source: *source})
	if err != nil {
		return err
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(*out); err != nil {
		return err
	}
	p, err := layout.Write(*out, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref.TagStr()})); err != nil {
		return err
	}
	if *archive != "" {
		if err := tarball.WriteToFile(*archive, ref, img); err != nil {
			return err
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *tag, d)
	return nil
}
