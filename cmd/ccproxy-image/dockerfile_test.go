package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/imagebuild"
)

// TestDockerfile: the Dockerfile builds the image `make image` builds —
// the same entrypoint, user and version label, a static binary with the
// version stamped — on base images pinned by digest, the last one
// distroless static (no shell).
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := strings.ReplaceAll(string(raw), "\\\n", " ")
	from := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(df, -1)
	if len(from) < 2 {
		t.Fatalf("FROM lines: %q (want a builder stage and a runtime stage)", from)
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:[a-z0-9.-]+@sha256:[0-9a-f]{64}$`)
	for _, f := range from {
		if !pinned.MatchString(f[1]) {
			t.Errorf("FROM %s is not pinned by digest", f[1])
		}
	}
	if last := from[len(from)-1][1]; !strings.HasPrefix(last, "gcr.io/distroless/static-debian12:nonroot@") {
		t.Errorf("runtime stage %s, want distroless static nonroot", last)
	}
	final := df[strings.LastIndex(df, "\nFROM "):]
	for _, want := range []string{
		"\nUSER " + imagebuild.User + "\n",
		"\nENTRYPOINT [\"" + imagebuild.BinaryPath + "\"]\n",
		"COPY --from=build /out/ccproxy " + imagebuild.BinaryPath + "\n",
		imagebuild.VersionLabel + "=${VERSION}",
	} {
		if !strings.Contains(final, want) {
			t.Errorf("the runtime stage lacks %q", want)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", `-ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}"`, "./cmd/ccproxy\n"} {
		if !strings.Contains(df, want) {
			t.Errorf("the build stage lacks %q", want)
		}
	}
}
