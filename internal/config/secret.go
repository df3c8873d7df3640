package config

import (
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Masked replaces a secret, or the secret part of a value, wherever ccproxy
// would otherwise print it.
const Masked = "[REDACTED]"

// minSecretPartLen is the shortest secret part searched for on its own in
// free text. A shorter password (say "pw") would mask every occurrence of
// those letters in every message; it is still masked inside its whole
// setting value, which is always searched for.
const minSecretPartLen = 4

// secretParts returns the strings of value v of s that must never be
// printed: the whole value of a Secret setting; for a Credentials setting,
// the whole value and every password it carries, in every spelling a
// library might print (URL-encoded and decoded, quoted and not).
func secretParts(s Setting, v string) []string {
	switch {
	case v == "":
		return nil
	case s.Secret:
		return []string{v, strings.TrimSpace(v)}
	case s.Credentials:
		return credentialParts(v)
	}
	return nil
}

// dsnPassword finds password=… in a key=value connection string (libpq's
// "host=db user=u password='a b'") or a URL's query (?password=…).
var dsnPassword = regexp.MustCompile(`(?i)(?:^|[\s&?;])(?:ssl)?pass(?:word)?\s*=\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;]*)`)

// credentialParts returns v and the passwords in it. It reads v the way a
// careful reader of a malformed URL would, so a value that does not parse
// still has its password found: the user information is whatever lies
// between "://" and the last "@", and the password whatever follows the
// first ":" there.
func credentialParts(v string) []string {
	parts := []string{v, strings.TrimSpace(v)}
	add := func(p string) {
		if p == "" {
			return
		}
		parts = append(parts, p)
		for _, unescape := range []func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
			if d, err := unescape(p); err == nil && d != p {
				parts = append(parts, d)
			}
		}
		// How a library re-encodes it when it prints the URL back.
		parts = append(parts, url.PathEscape(p), url.QueryEscape(p), url.UserPassword("", p).String()[1:])
	}
	if _, rest, ok := strings.Cut(v, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			userinfo := rest[:at]
			if _, pw, ok := strings.Cut(userinfo, ":"); ok {
				add(pw)
			} else if strings.HasPrefix(strings.ToLower(v), "redis") {
				// redis://secret@host: some clients take a lone user
				// name as the password.
				add(userinfo)
			}
		}
	}
	if u, err := url.Parse(strings.TrimSpace(v)); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			add(pw)
		}
	}
	for _, m := range dsnPassword.FindAllStringSubmatch(v, -1) {
		pw := m[1]
		if len(pw) >= 2 && (pw[0] == '\'' || pw[0] == '"') && pw[len(pw)-1] == pw[0] {
			add(pw)
			pw = strings.NewReplacer(`\\`, `\`, `\'`, `'`, `\"`, `"`).Replace(pw[1 : len(pw)-1])
		}
		add(pw)
	}
	return parts
}

// Redactor masks the secret values of a command's settings in text: the
// error a command ends with, and every log line (observability wraps the
// log handler with it). The zero value and nil mask nothing.
type Redactor struct {
	r *strings.Replacer
}

// NewRedactor returns a Redactor that masks each of the given secret
// strings. Parts shorter than minSecretPartLen are ignored unless they are
// a whole value (wholes holds those).
func newRedactor(parts []string, wholes map[string]bool) *Redactor {
	seen := map[string]bool{}
	var keep []string
	for _, p := range parts {
		if p == "" || seen[p] || (len(p) < minSecretPartLen && !wholes[p]) {
			continue
		}
		seen[p] = true
		keep = append(keep, p)
	}
	if len(keep) == 0 {
		return &Redactor{}
	}
	// strings.Replacer tries the old strings in argument order at each
	// position: the longest first, so a whole URL is masked as one piece
	// rather than as its password.
	sort.Slice(keep, func(i, j int) bool {
		if len(keep[i]) != len(keep[j]) {
			return len(keep[i]) > len(keep[j])
		}
		return keep[i] < keep[j]
	})
	pairs := make([]string, 0, 2*len(keep))
	for _, p := range keep {
		pairs = append(pairs, p, Masked)
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// Redact returns s with every secret masked.
func (r *Redactor) Redact(s string) string {
	if r == nil || r.r == nil {
		return s
	}
	return r.r.Replace(s)
}

// Empty reports whether r masks nothing.
func (r *Redactor) Empty() bool { return r == nil || r.r == nil }

// shown is how a Load error shows the value v of s: quoted, with the
// secret parts of a Credentials value masked (so the host and database
// stay visible), and not at all for a Secret setting.
func shown(s Setting, v string) string {
	if s.Secret {
		return "(secret, not shown)"
	}
	if s.Credentials {
		parts := credentialParts(v)[2:] // the passwords, not the whole value
		wholes := map[string]bool{}
		for _, p := range parts {
			wholes[p] = true // mask even a short password inside its own URL
		}
		return quote(newRedactor(parts, wholes).Redact(v))
	}
	return quote(v)
}

func quote(v string) string { return strconv.Quote(v) }
