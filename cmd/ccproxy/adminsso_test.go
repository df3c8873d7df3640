package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/store"
)

// TestSSOSettings: single sign-on is off by default, configured from the
// environment with the secret from a variable or a file, and refused at
// start when half configured.
func TestSSOSettings(t *testing.T) {
	load := func(e map[string]string) (*ssoSettings, error) {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		s := &ssoSettings{}
		return s, config.Bind(fs, s.group()).WithLookup(env(e)).Load()
	}
	s, err := load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.config(); c != nil || err != nil {
		t.Fatalf("default: %+v, %v; want off", c, err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("  from the file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := map[string]string{
		"CCPROXY_OIDC_ISSUER_URL":    "https://idp.example.com",
		"CCPROXY_OIDC_CLIENT_ID":     "ccproxy",
		"CCPROXY_OIDC_REDIRECT_URL":  "https://admin.example.com/api/v1/auth/oidc/callback",
		"CCPROXY_OIDC_ROLE_MAPPING":  "admins=owner, finance=viewer",
		"CCPROXY_OIDC_SCOPES":        "openid, email,groups",
		"CCPROXY_OIDC_CLIENT_SECRET": "from the variable",
	}
	with := func(extra map[string]string, drop ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for _, k := range drop {
			delete(m, k)
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	s, err = load(full)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.config()
	if err != nil || c.ClientSecret != "from the variable" || c.GroupsClaim != "groups" ||
		strings.Join(c.Scopes, " ") != "openid email groups" || c.RoleMapping["admins"] != store.RoleOwner || c.RoleMapping["finance"] != store.RoleViewer {
		t.Fatalf("config %+v, %v", c, err)
	}
	s, _ = load(with(map[string]string{"CCPROXY_OIDC_CLIENT_SECRET_FILE": secretFile}, "CCPROXY_OIDC_CLIENT_SECRET"))
	if c, err := s.config(); err != nil || c.ClientSecret != "from the file" {
		t.Fatalf("secret file: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"secret twice", with(map[string]string{"CCPROXY_OIDC_CLIENT_SECRET_FILE": secretFile}), "set the client secret once"},
		{"secret file missing", with(map[string]string{"CCPROXY_OIDC_CLIENT_SECRET_FILE": secretFile + ".nope"}, "CCPROXY_OIDC_CLIENT_SECRET"), "read --oidc-client-secret-file"},
		{"no secret", with(nil, "CCPROXY_OIDC_CLIENT_SECRET"), "client secret is required"},
		{"no mapping", with(nil, "CCPROXY_OIDC_ROLE_MAPPING"), "mapping is required"},
		{"plain http issuer", with(map[string]string{"CCPROXY_OIDC_ISSUER_URL": "http://idp.example.com"}), "must be https"},
		{"no issuer", map[string]string{"CCPROXY_OIDC_CLIENT_ID": "x"}, "CCPROXY_OIDC_ISSUER_URL is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := load(tc.env)
			if err == nil {
				_, err = s.config()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "from the variable") {
				t.Errorf("the secret is in the error: %v", err)
			}
		})
	}
	for _, tc := range []struct{ env, value, want string }{
		{"CCPROXY_OIDC_ROLE_MAPPING", "admins=root", "unknown role"},
		{"CCPROXY_OIDC_ROLE_MAPPING", "leads=team_admin", "team_admin cannot come from a group mapping (a team admin names its team)"},
		{"CCPROXY_OIDC_ALLOWED_EMAIL_DOMAINS", "@example.com", "domain names"},
		{"CCPROXY_OIDC_GROUPS_CLAIM", " ", "must name a claim"},
		{"CCPROXY_OIDC_ISSUER_URL", "idp.example.com", "absolute https URL"},
	} {
		if _, err := load(with(map[string]string{tc.env: tc.value})); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: %v, want %q", tc.env, tc.value, err, tc.want)
		}
	}
}
