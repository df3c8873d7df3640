// Package config owns the machinery of ccproxy's settings: how a setting is
// declared (name, variable, default, documentation, validation), how a
// command binds settings to its flags and resolves them, and the small
// setting structs that several commands share (Postgres, Redis, logging,
// secrets, serving, billing). The settings only one command reads are
// declared beside that command, in cmd/ccproxy.
//
// Every setting can be given as a command-line flag or as an environment
// variable (CCPROXY_*, plus the conventional DATABASE_URL and REDIS_URL); a
// flag wins over the environment. A command binds exactly the groups of
// settings it uses, so `ccproxy <command> --help` lists exactly those, and
// Load reports every bad value by its flag and variable name.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Setting describes one configuration value.
type Setting struct {
	// Flag is the command-line flag name, without dashes.
	Flag string
	// Env is the environment variable name.
	Env string
	// Default is the value used when neither flag nor variable is set.
	Default string
	// Usage is the one-line description shown in --help and the docs.
	Usage string
	// Secret values are never printed, not even in error messages, nor
	// any log line (Binding.Redactor).
	Secret bool
	// Credentials marks a connection URL or key=value string that may carry
	// a password (postgres://u:pw@host/db, redis://:pw@host, password=pw):
	// the password is never printed, in any of its spellings, while the
	// rest of the value may be.
	Credentials bool
	// Required settings must be non-empty after defaults.
	Required bool
	// Type names the kind of value in --help ("duration", "int", "bool",
	// "string"); empty infers it from Default.
	Type string
	// Set parses v and stores it in the settings struct the Setting was
	// made for; an error explains what a valid value looks like.
	Set func(v string) error
	// emptyOK skips Set for an empty value: the command fills the field in
	// itself (see Group.WithDefault).
	emptyOK bool
	// overridden is set by WithDefault: the documentation shows the
	// declared default, and the command's own beside it.
	overridden bool
	// commandDefaults are the commands' own defaults, for the docs.
	commandDefaults []string
}

// Name returns how the setting is referred to in messages: flag and variable.
func (s Setting) Name() string { return "--" + s.Flag + " / " + s.Env }

// Group is a set of settings that configure one thing and are documented
// together under Title. Settings structs return their Group with the
// setters bound to themselves.
type Group struct {
	// Title names the group in docs/configuration.md.
	Title    string
	Settings []Setting
}

// WithDefault returns a copy of g in which the setting with the given flag
// has a different default (e.g. loopback addresses for dev) and is
// optional. An empty default means the command derives the value itself
// when none is given.
func (g Group) WithDefault(flag, def string) Group {
	out := Group{Title: g.Title, Settings: append([]Setting(nil), g.Settings...)}
	for i := range out.Settings {
		if s := &out.Settings[i]; s.Flag == flag {
			s.Default = def
			s.Required = false
			s.emptyOK = def == ""
			s.overridden = true
		}
	}
	return out
}

// Binding ties settings to a command's flag set.
type Binding struct {
	fs       *pflag.FlagSet
	settings []Setting
	values   map[string]*string
	lookup   func(string) (string, bool)
	// secrets are the values of Secret and Credentials settings seen by
	// Load, for Redactor.
	secrets []secretValue
}

// secretValue is a value given to a Secret or Credentials setting.
type secretValue struct {
	setting Setting
	value   string
}

// flagValue is a setting's flag: it keeps the text as given (Load parses
// it with the setting's Set) and names the setting's type in --help.
type flagValue struct {
	s   string
	typ string
}

func (v *flagValue) String() string     { return v.s }
func (v *flagValue) Set(s string) error { v.s = s; return nil }
func (v *flagValue) Type() string       { return v.typ }

// valueType is Type, or the type Default looks like.
func (s Setting) valueType() string {
	if s.Type != "" {
		return s.Type
	}
	d := s.Default
	switch {
	case d == "true" || d == "false":
		return "bool"
	case d == "":
		return "string"
	}
	if _, err := strconv.Atoi(d); err == nil {
		return "int"
	}
	if _, err := time.ParseDuration(d); err == nil {
		return "duration"
	}
	return "string"
}

// docAnnotation is the flag annotation that keeps what the documentation
// shows of a bound setting (flagDoc, as JSON), so that it can be generated
// from the commands' flag sets (BoundGroups).
const docAnnotation = "ccproxy.setting"

// flagDoc is what BoundGroups recovers of a bound setting.
type flagDoc struct {
	Group      string `json:"group"`
	Order      int    `json:"order"`
	Env        string `json:"env"`
	Default    string `json:"default"`
	Usage      string `json:"usage"`
	Secret     bool   `json:"secret,omitempty"`
	Creds      bool   `json:"credentials,omitempty"`
	Required   bool   `json:"required,omitempty"`
	Overridden bool   `json:"overridden,omitempty"`
}

// Bind registers the flags of every setting in groups on fs. A setting that
// appears in more than one group is bound once, with its first group.
func Bind(fs *pflag.FlagSet, groups ...Group) *Binding {
	b := &Binding{fs: fs, values: map[string]*string{}, lookup: os.LookupEnv}
	for _, g := range groups {
		for _, s := range g.Settings {
			if _, dup := b.values[s.Flag]; dup {
				continue
			}
			def := s.Default
			if s.Secret {
				def = ""
			}
			v := &flagValue{s: def, typ: s.valueType()}
			b.values[s.Flag] = &v.s
			fs.Var(v, s.Flag, s.Usage+" (env "+s.Env+")")
			if v.typ == "bool" {
				// --flag alone means true, like a bool flag.
				fs.Lookup(s.Flag).NoOptDefVal = "true"
			}
			doc, err := json.Marshal(flagDoc{
				Group: g.Title, Order: len(b.settings), Env: s.Env, Default: s.Default, Usage: s.Usage,
				Secret: s.Secret, Creds: s.Credentials, Required: s.Required, Overridden: s.overridden,
			})
			if err != nil {
				panic(err) // a struct of strings, ints and bools always marshals
			}
			_ = fs.SetAnnotation(s.Flag, docAnnotation, []string{string(doc)})
			b.settings = append(b.settings, s)
		}
	}
	return b
}

// WithLookup replaces the environment lookup, for tests.
func (b *Binding) WithLookup(lookup func(string) (string, bool)) *Binding {
	b.lookup = lookup
	return b
}

// Load resolves every bound setting (flag, else environment, else default),
// validates it and stores it in its settings struct. The error names every
// bad setting by flag and variable, without echoing secret values or the
// passwords in connection URLs.
func (b *Binding) Load() error {
	var errs []error
	b.secrets = nil
	for _, s := range b.settings {
		v := s.Default
		if env, ok := b.lookup(s.Env); ok {
			v = env
			b.noteSecret(s, env)
		}
		if f := b.fs.Lookup(s.Flag); f != nil && f.Changed {
			v = *b.values[s.Flag]
			b.noteSecret(s, v)
		}
		v = strings.TrimSpace(v)
		if v == "" && s.Required {
			errs = append(errs, fmt.Errorf("setting %s is required: %s", s.Name(), s.Usage))
			continue
		}
		if v == "" && s.emptyOK {
			continue
		}
		if err := s.Set(v); err != nil {
			// A setter's error may quote what it parsed: masked as well.
			msg := newRedactor(secretParts(s, v), map[string]bool{v: true}).Redact(err.Error())
			errs = append(errs, fmt.Errorf("setting %s = %s is invalid: %s", s.Name(), shown(s, v), msg))
		}
	}
	return errors.Join(errs...)
}

func (b *Binding) noteSecret(s Setting, v string) {
	if (s.Secret || s.Credentials) && v != "" {
		b.secrets = append(b.secrets, secretValue{s, v})
	}
}

// Redactor returns what masks, in any text, the values Load saw of the
// bound Secret settings and the passwords of the Credentials settings,
// whether they were valid or not. A command wraps its logger and its
// final error with it.
func (b *Binding) Redactor() *Redactor {
	var parts []string
	wholes := map[string]bool{}
	for _, sv := range b.secrets {
		parts = append(parts, secretParts(sv.setting, sv.value)...)
		wholes[sv.value] = true
	}
	return newRedactor(parts, wholes)
}

// Settings returns the bound settings sorted by flag name.
func (b *Binding) Settings() []Setting {
	out := append([]Setting(nil), b.settings...)
	sort.Slice(out, func(i, j int) bool { return out[i].Flag < out[j].Flag })
	return out
}

// BoundGroups returns the groups of settings bound on fs, in the order they
// were bound, for documentation: the settings have no setter. A flag set
// without settings gives none.
func BoundGroups(fs *pflag.FlagSet) ([]Group, error) {
	type bound struct {
		flag string
		doc  flagDoc
	}
	var all []bound
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		raw := f.Annotations[docAnnotation]
		if len(raw) != 1 {
			return
		}
		var d flagDoc
		if e := json.Unmarshal([]byte(raw[0]), &d); e != nil {
			err = fmt.Errorf("config: flag --%s: %w", f.Name, e)
			return
		}
		all = append(all, bound{f.Name, d})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(i, j int) bool { return all[i].doc.Order < all[j].doc.Order })
	var out []Group
	index := map[string]int{}
	for _, a := range all {
		i, ok := index[a.doc.Group]
		if !ok {
			i = len(out)
			index[a.doc.Group] = i
			out = append(out, Group{Title: a.doc.Group})
		}
		d := a.doc
		out[i].Settings = append(out[i].Settings, Setting{
			Flag: a.flag, Env: d.Env, Default: d.Default, Usage: d.Usage,
			Secret: d.Secret, Credentials: d.Creds, Required: d.Required, overridden: d.Overridden,
		})
	}
	return out, nil
}
