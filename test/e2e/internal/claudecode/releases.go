package claudecode

import (
	_ "embed"
	"fmt"
	"strings"
)

// releasesFile lists the releases the gateway is tested with (its comment
// says how to update it).
//
//go:embed releases.txt
var releasesFile string

// Release is one line of releases.txt.
type Release struct {
	// Version is the npm version, e.g. "2.1.89".
	Version string
	// CI marks the releases `make test` runs; `make e2e-releases` runs all.
	CI bool
	// Note says why the release is in the list.
	Note string
}

// Releases returns the releases of releases.txt in file order.
func Releases() ([]Release, error) {
	return parseReleases(releasesFile)
}

func parseReleases(text string) ([]Release, error) {
	var out []Release
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		r := Release{Version: fields[0]}
		rest := fields[1:]
		if len(rest) > 0 && rest[0] == "ci" {
			r.CI, rest = true, rest[1:]
		}
		r.Note = strings.Join(rest, " ")
		if !validVersion(r.Version) {
			return nil, fmt.Errorf("claudecode: releases.txt line %d: %q is not a release version", i+1, r.Version)
		}
		if seen[r.Version] {
			return nil, fmt.Errorf("claudecode: releases.txt line %d: %s listed twice", i+1, r.Version)
		}
		seen[r.Version] = true
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("claudecode: releases.txt lists no release")
	}
	return out, nil
}
