package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/oidctest"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// ssoBrowserResult is what dashboard/e2e/sso.mjs read off the pages.
type ssoBrowserResult struct {
	Error       string
	ViewerWho   string
	ViewerNav   []string
	ViewerWrite string
	// ViewerWriteButtons counts the write controls a viewer saw.
	ViewerWriteButtons int
	OwnerNav           []string
	AdminsRows         []string
	RoleChanged        string
	Refusal            string
	RefusalURL         string
	ConsoleErrors      []string
}

// TestSSOInBrowser drives single sign-on in Debian's chromium against a
// real `ccproxy dev` and a real OpenID provider (internal/oidctest): the
// login page offers "Sign in with SSO", the provider's own login page
// signs a member of the viewers group in, the dashboard shows a viewer
// without the Admins page or write controls, and the API refuses its write; the first owner, logging
// in with its password, sees the SSO admin on the Admins page and changes
// its role; someone whose groups map to no role is sent back to the login
// page with a message.
func TestSSOInBrowser(t *testing.T) {
	browser := needDashboardBrowser(t)

	issuer, startProvider := oidctest.New(t, []oidctest.Person{
		{ID: "u-vera", Username: "vera", Password: "vera's long password", Email: "vera@example.com", Groups: []string{"staff", "ccproxy-viewers"}},
		{ID: "u-nick", Username: "nick", Password: "nick's long password", Email: "nick@example.com", Groups: []string{"staff"}},
	})
	// The redirect URL is registered at the provider before ccproxy starts:
	// the admin API's address is chosen here.
	adminAddr := freeAddrs(t, 1)[0]
	callback := "http://" + adminAddr + "/api/v1/auth/oidc/callback"
	const clientID, clientSecret = "ccproxy-dashboard", "the dashboard test's client secret"
	startProvider(oidctest.WebClient(clientID, clientSecret, callback))

	fake := fakeanthropic.New(t, func(fakeanthropic.Request) fakeanthropic.Reply {
		return fakeanthropic.Reply{Header: http.Header{"Content-Type": {"application/json"}},
			Body: fakeanthropic.Message("claude-sonnet-4-5", "hello", fakeanthropic.Usage{Input: 1, Output: 1})}
	})
	secretFile := filepath.Join(t.TempDir(), "oidc-secret")
	if err := os.WriteFile(secretFile, []byte(clientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const password = "sso-browser-test-password"
	startDevWith(t, devConfig{AnthropicURL: fake.URL, AdminPassword: password, Env: []string{
		"CCPROXY_ADMIN_ADDR=" + adminAddr,
		"CCPROXY_OIDC_ISSUER_URL=" + issuer,
		"CCPROXY_OIDC_CLIENT_ID=" + clientID,
		"CCPROXY_OIDC_CLIENT_SECRET_FILE=" + secretFile,
		"CCPROXY_OIDC_REDIRECT_URL=" + callback,
		"CCPROXY_OIDC_SCOPES=openid,email,profile,groups",
		"CCPROXY_OIDC_ROLE_MAPPING=ccproxy-viewers=viewer,ccproxy-owners=owner",
	}})

	var res ssoBrowserResult
	browser.run(t, 4*time.Minute, "e2e/sso.mjs", []string{"ADMIN=http://" + adminAddr, "ISSUER=" + issuer, "PASSWORD=" + password}, &res)
	if res.ViewerWho != "vera@example.com (viewer) · UTC" {
		t.Errorf("viewer's header = %q", res.ViewerWho)
	}
	// Other pages may join the navigation; the Admins page is the owners'.
	if !slices.Contains(res.ViewerNav, "Developers") || slices.Contains(res.ViewerNav, "Admins") {
		t.Errorf("viewer's navigation = %q (no Admins page for a viewer)", res.ViewerNav)
	}
	if res.ViewerWriteButtons != 0 {
		t.Errorf("a viewer saw %d write controls", res.ViewerWriteButtons)
	}
	if res.ViewerWrite != "403 viewers have read-only access" {
		t.Errorf("viewer's write: %q", res.ViewerWrite)
	}
	if !slices.Contains(res.OwnerNav, "Admins") {
		t.Errorf("owner's navigation = %q", res.OwnerNav)
	}
	if len(res.AdminsRows) != 3 || !strings.HasPrefix(res.AdminsRows[0], "admin owner Password Active") ||
		!strings.HasPrefix(res.AdminsRows[1], "auditor viewer Password Active") ||
		!strings.HasPrefix(res.AdminsRows[2], "vera@example.com admin SSO Active") {
		t.Errorf("Admins page rows = %q", res.AdminsRows)
	}
	if res.RoleChanged != "admin" {
		t.Errorf("vera's role after the owner's change = %q", res.RoleChanged)
	}
	if res.Refusal != "None of your groups gives access to ccproxy. Ask an owner." || res.RefusalURL != "/login?sso_error=no_role" {
		t.Errorf("refused sign-in: %q at %q", res.Refusal, res.RefusalURL)
	}
	if len(res.ConsoleErrors) > 0 {
		t.Errorf("console errors: %q", res.ConsoleErrors)
	}
}
