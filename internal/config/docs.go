package config

import (
	"fmt"
	"sort"
	"strings"
)

// groupTitles orders and names the groups in the generated documentation.
var groupTitles = [][2]string{
	{"database", "Database"},
	{"redis", "Redis"},
	{"logging", "Logging"},
	{"keys", "Access keys"},
	{"secrets", "Stored secrets"},
	{"serving", "Serving (every long-running command)"},
	{"dataplane", "Data plane (`ccproxy controlplane`, `ccproxy dev`)"},
	{"xds", "xDS (`ccproxy controlplane`, `ccproxy dev`)"},
	{"extproc", "ext_proc sidecar (`ccproxy extproc`, `ccproxy controlplane`, `ccproxy dev`)"},
	{"redisns", "Redis namespace (`ccproxy admin`, `ccproxy extproc`)"},
	{"admin", "Admin service (`ccproxy admin`, `ccproxy dev`)"},
	{"keyservice", "Key lookups (`ccproxy extproc`)"},
	{"billing", "Billing (`ccproxy admin`, `ccproxy extproc`, `ccproxy dev`)"},
	{"usageingest", "Usage ingest (`ccproxy admin`, `ccproxy dev`)"},
	{"dev", "Development (`ccproxy dev`)"},
}

// Markdown renders every setting as the tables kept in
// docs/configuration.md; a test keeps the two identical.
func Markdown() string {
	all := All()
	var b strings.Builder
	seen := map[string]bool{}
	for _, gt := range groupTitles {
		seen[gt[0]] = true
		writeGroup(&b, gt[1], all[gt[0]])
	}
	var rest []string
	for k := range all {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		writeGroup(&b, k, all[k])
	}
	return b.String()
}

func writeGroup(b *strings.Builder, title string, settings []Setting) {
	fmt.Fprintf(b, "### %s\n\n| Variable | Flag | Default | Description |\n|---|---|---|---|\n", title)
	for _, s := range settings {
		def := "`" + s.Default + "`"
		switch {
		case s.Required:
			def = "required"
		case s.Default == "":
			def = "(empty)"
		}
		desc := strings.ReplaceAll(s.Usage, "|", `\|`)
		if s.Secret {
			desc += " Secret: never logged."
		}
		fmt.Fprintf(b, "| `%s` | `--%s` | %s | %s |\n", s.Env, s.Flag, def, desc)
	}
	b.WriteString("\n")
}
