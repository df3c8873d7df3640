package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/store"
)

// ssoSettings configure the admin service's single sign-on through an
// OpenID Connect provider (docs/operations.md, "Admin roles and single
// sign-on"). All empty: password logins only.
type ssoSettings struct {
	IssuerURL        string
	ClientID         string
	ClientSecret     string
	ClientSecretFile string
	RedirectURL      string
	Scopes           []string
	GroupsClaim      string
	RoleMapping      map[string]store.AdminRole
	EmailDomains     []string
}

// config returns the single sign-on configuration, nil when it is off, or
// why the settings do not make one. It reads the client secret file.
func (s ssoSettings) config() (*admin.OIDCConfig, error) {
	if s.IssuerURL == "" {
		if s.ClientID != "" || s.ClientSecret != "" || s.ClientSecretFile != "" || s.RedirectURL != "" || len(s.RoleMapping) > 0 {
			return nil, errors.New("single sign-on: --oidc-issuer-url / CCPROXY_OIDC_ISSUER_URL is empty but other CCPROXY_OIDC_* settings are set: set it, or unset them")
		}
		return nil, nil
	}
	secret := s.ClientSecret
	if s.ClientSecretFile != "" {
		if secret != "" {
			return nil, errors.New("single sign-on: set the client secret once: CCPROXY_OIDC_CLIENT_SECRET or CCPROXY_OIDC_CLIENT_SECRET_FILE")
		}
		b, err := os.ReadFile(s.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("single sign-on: read --oidc-client-secret-file / CCPROXY_OIDC_CLIENT_SECRET_FILE: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	c := &admin.OIDCConfig{IssuerURL: s.IssuerURL, ClientID: s.ClientID, ClientSecret: secret, RedirectURL: s.RedirectURL,
		Scopes: s.Scopes, GroupsClaim: s.GroupsClaim, RoleMapping: s.RoleMapping, AllowedEmailDomains: s.EmailDomains}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("single sign-on (CCPROXY_OIDC_*): %w", err)
	}
	return c, nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func checkURLSetting(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must be an absolute https URL without query or fragment (http only on a loopback host)")
	}
	return nil
}

func (s *ssoSettings) group() config.Group {
	return config.Group{Title: "Admin single sign-on", Settings: []config.Setting{{
		Flag: "oidc-issuer-url", Env: "CCPROXY_OIDC_ISSUER_URL",
		Usage: "issuer URL of the OpenID Connect provider admins sign in with (e.g. https://company.okta.com, https://login.microsoftonline.com/<tenant>/v2.0, https://accounts.google.com); its discovery document must state exactly this issuer. Empty: password logins only",
		Set: func(v string) error {
			if err := checkURLSetting(v); err != nil {
				return err
			}
			s.IssuerURL = v
			return nil
		},
	}, {
		Flag: "oidc-client-id", Env: "CCPROXY_OIDC_CLIENT_ID",
		Usage: "client id of the admin service registered at the provider (a confidential web client, authorization code flow)",
		Set:   func(v string) error { s.ClientID = v; return nil },
	}, {
		Flag: "oidc-client-secret", Env: "CCPROXY_OIDC_CLIENT_SECRET", Secret: true,
		Usage: "client secret of that client; or use --oidc-client-secret-file",
		Set:   func(v string) error { s.ClientSecret = v; return nil },
	}, {
		Flag: "oidc-client-secret-file", Env: "CCPROXY_OIDC_CLIENT_SECRET_FILE",
		Usage: "file holding the client secret (surrounding white space ignored), e.g. a mounted Kubernetes secret",
		Set:   func(v string) error { s.ClientSecretFile = v; return nil },
	}, {
		Flag: "oidc-redirect-url", Env: "CCPROXY_OIDC_REDIRECT_URL",
		Usage: "the admin service's callback as registered at the provider: https://<admin host>/api/v1/auth/oidc/callback",
		Set: func(v string) error {
			if err := checkURLSetting(v); err != nil {
				return err
			}
			s.RedirectURL = v
			return nil
		},
	}, {
		Flag: "oidc-scopes", Env: "CCPROXY_OIDC_SCOPES", Default: "openid,email,profile",
		Usage: "comma-separated scopes to request (openid is always requested); add the scope that releases the groups claim if the provider needs one (Okta: groups)",
		Set:   func(v string) error { s.Scopes = splitList(v); return nil },
	}, {
		Flag: "oidc-groups-claim", Env: "CCPROXY_OIDC_GROUPS_CLAIM", Default: "groups",
		Usage: "name of the ID token (or userinfo) claim that lists the user's groups (a list of strings or one string)",
		Set: func(v string) error {
			if strings.TrimSpace(v) == "" {
				return errors.New("must name a claim, such as groups")
			}
			s.GroupsClaim = strings.TrimSpace(v)
			return nil
		},
	}, {
		Flag: "oidc-role-mapping", Env: "CCPROXY_OIDC_ROLE_MAPPING",
		Usage: "comma-separated group=role pairs (roles owner, admin, viewer), e.g. ccproxy-owners=owner,platform=admin,finance=viewer; the highest role of a person's groups wins, set again at each sign-in; a person with no mapped group cannot sign in",
		Set: func(v string) error {
			m, err := admin.ParseRoleMapping(v)
			if err != nil {
				return err
			}
			s.RoleMapping = m
			return nil
		},
	}, {
		Flag: "oidc-allowed-email-domains", Env: "CCPROXY_OIDC_ALLOWED_EMAIL_DOMAINS",
		Usage: "comma-separated email domains (e.g. example.com); when set, only people with a verified email address in one of them may sign in. Empty: any",
		Set: func(v string) error {
			for _, d := range splitList(v) {
				if strings.ContainsAny(d, "@/ ") || !strings.Contains(d, ".") {
					return fmt.Errorf("%q: must be domain names such as example.com", d)
				}
			}
			s.EmailDomains = splitList(v)
			return nil
		},
	}}}
}
