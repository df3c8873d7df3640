package claudecode

import (
	"reflect"
	"testing"
)

func TestParseReleases(t *testing.T) {
	got, err := parseReleases("# comment\n\n2.0.56  ci  oldest; cli.js\n2.1.89   the month\n2.1.332 ci\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Release{{"2.0.56", true, "oldest; cli.js"}, {"2.1.89", false, "the month"}, {"2.1.332", true, ""}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"", "# only a comment\n", "2.1.x ci\n", "2.1.1\n2.1.1\n", "../2.1.1\n", "latest\n"} {
		if _, err := parseReleases(bad); err == nil {
			t.Errorf("parseReleases(%q) accepted", bad)
		}
	}
}

// TestReleasesFile keeps the list usable: it parses, holds the pinned
// release, and marks it and at least one older release for CI.
func TestReleasesFile(t *testing.T) {
	rs, err := Releases()
	if err != nil {
		t.Fatal(err)
	}
	var pinned bool
	ci := 0
	for _, r := range rs {
		if r.CI {
			ci++
		}
		if r.Version == Version {
			pinned = r.CI
		}
	}
	if !pinned || ci < 2 || ci > 4 {
		t.Errorf("releases.txt marks %d releases ci (pinned %s among them: %v); want 2 to 4 including the pinned one", ci, Version, pinned)
	}
}
