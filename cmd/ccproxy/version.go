package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set at link time by the Makefile:
//
//	-ldflags "-X main.version=$(git describe …) -X main.commit=$(git rev-parse HEAD)"
//
// Releases are tagged vMAJOR.MINOR.PATCH (semantic versioning, see
// CHANGELOG.md); a build between tags is named by git describe
// (v0.2.0-3-gabc1234, -dirty for uncommitted changes). A plain `go build`
// leaves version "dev" and takes the commit from the build information Go
// records.
var (
	version = "dev"
	commit  = ""
)

// buildInfo is what `ccproxy version` prints.
type buildInfo struct {
	Version, Commit, Go, Platform string
}

func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if b.Commit == "" {
		b.Commit = "unknown"
		if info, ok := debug.ReadBuildInfo(); ok {
			rev, dirty := "", false
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" {
				b.Commit = rev
				if dirty {
					b.Commit += "-dirty"
				}
			}
		}
	}
	return b
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the ccproxy version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := currentBuild()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "ccproxy %s\ncommit: %s\ngo: %s %s\n", b.Version, b.Commit, b.Go, b.Platform)
			return err
		},
	}
}
