package config

import (
	"fmt"
	"sort"
	"strings"
)

// CommandGroups is the settings one command binds, for documentation.
type CommandGroups struct {
	// Command is the command's name as typed, e.g. "ccproxy extproc".
	Command string
	Groups  []Group
}

// Markdown renders the settings of every command as the tables kept in
// docs/configuration.md: one table per group, titled with the commands that
// read it, the groups most commands share first. A setting shows its
// declared default, and after it each command's own (Group.WithDefault),
// such as ccproxy dev's loopback addresses. It fails
// when one flag is documented in two groups or differently by two commands.
func Markdown(cmds []CommandGroups) (string, error) {
	type doc struct {
		title    string
		first    int
		commands []string
		settings []Setting
	}
	var docs []*doc
	byTitle := map[string]*doc{}
	flagGroup := map[string]string{}
	for _, c := range cmds {
		for _, g := range c.Groups {
			d := byTitle[g.Title]
			if d == nil {
				d = &doc{title: g.Title, first: len(docs)}
				byTitle[g.Title] = d
				docs = append(docs, d)
			}
			if !contains(d.commands, c.Command) {
				d.commands = append(d.commands, c.Command)
			}
			for _, s := range g.Settings {
				if t, ok := flagGroup[s.Flag]; ok && t != g.Title {
					return "", fmt.Errorf("config: --%s is in group %q and in group %q", s.Flag, t, g.Title)
				}
				flagGroup[s.Flag] = g.Title
				if err := merge(&d.settings, s, c.Command); err != nil {
					return "", fmt.Errorf("config: %s: %w", c.Command, err)
				}
			}
		}
	}
	sort.SliceStable(docs, func(i, j int) bool {
		if len(docs[i].commands) != len(docs[j].commands) {
			return len(docs[i].commands) > len(docs[j].commands)
		}
		return docs[i].first < docs[j].first
	})
	var b strings.Builder
	for _, d := range docs {
		writeGroup(&b, d.title+" (`"+strings.Join(d.commands, "`, `")+"`)", d.settings)
	}
	return b.String(), nil
}

// merge adds s, as command binds it, to settings, or, when its flag is
// there already, keeps the copy whose default is the declared one; a
// command's own default is noted on the setting kept.
func merge(settings *[]Setting, s Setting, command string) error {
	if s.overridden {
		s.commandDefaults = []string{commandDefault(command, s.Default)}
	}
	for i, have := range *settings {
		if have.Flag != s.Flag {
			continue
		}
		if have.Env != s.Env || have.Usage != s.Usage || have.Secret != s.Secret || have.Credentials != s.Credentials {
			return fmt.Errorf("--%s is declared twice, differently", s.Flag)
		}
		notes := append(have.commandDefaults, s.commandDefaults...)
		if have.overridden && !s.overridden {
			(*settings)[i] = s
		}
		(*settings)[i].commandDefaults = notes
		return nil
	}
	*settings = append(*settings, s)
	return nil
}

func commandDefault(command, def string) string {
	if def == "" {
		return "`" + command + "`: chosen by the command"
	}
	return "`" + command + "`: `" + def + "`"
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
		if s.overridden && len(s.commandDefaults) > 0 {
			// Only commands override this setting: none has the declared default.
			def = strings.Join(s.commandDefaults, "<br>")
		} else if len(s.commandDefaults) > 0 {
			def += "<br>" + strings.Join(s.commandDefaults, "<br>")
		}
		desc := strings.ReplaceAll(s.Usage, "|", `\|`)
		switch {
		case s.Secret:
			desc += " Secret: never logged."
		case s.Credentials:
			desc += " Its password is never logged."
		}
		fmt.Fprintf(b, "| `%s` | `--%s` | %s | %s |\n", s.Env, s.Flag, def, desc)
	}
	b.WriteString("\n")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
