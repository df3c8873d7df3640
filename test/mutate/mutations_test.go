package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMutationsApply keeps the list in step with the code: every mutation's
// snippet occurs exactly once in its file and names packages that exist.
// (Running the mutations is `make mutate`; it takes minutes.)
func TestMutationsApply(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range Mutations {
		t.Run(m.Name, func(t *testing.T) {
			if names[m.Name] {
				t.Fatalf("duplicate name %q", m.Name)
			}
			names[m.Name] = true
			if len(m.Packages) == 0 {
				t.Fatal("no packages to test")
			}
			for _, p := range m.Packages {
				if p == "./test/e2e" || strings.HasPrefix(p, "./test/e2e/") {
					t.Fatalf("%s: a mutation must be caught by the owning package's tests, not only end to end", p)
				}
			}
			if _, err := m.Apply(filepath.Join(root, m.File)); err != nil {
				t.Fatal(err)
			}
		})
	}
	args := []string{"list", "-e", "-f", "{{if .Error}}{{.ImportPath}}: {{.Error}}{{end}}"}
	seen := map[string]bool{}
	for _, m := range Mutations {
		for _, p := range m.Packages {
			if !seen[p] {
				seen[p] = true
				args = append(args, p)
			}
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("go list: %v\n%s", err, out)
	}
}
