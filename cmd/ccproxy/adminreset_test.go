package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
)

// TestAdminResetPassword runs `ccproxy admin reset-password` against a
// database with a disabled admin and checks, through the admin API, which
// password logs in afterwards.
func TestAdminResetPassword(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	t.Setenv("DATABASE_URL", st.Pool().Config().ConnString())
	t.Setenv("CCPROXY_LOG_FORMAT", "json")
	if _, err := admin.EnsureFirstAdmin(ctx, st, "root", "the original password"); err != nil {
		t.Fatal(err)
	}
	root, err := st.Admins().GetByUsername(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Admins().SetDisabled(ctx, root.ID, true); err != nil {
		t.Fatal(err)
	}
	mk := make([]byte, 32)
	_, _ = rand.Read(mk)
	sealer, _ := secrets.NewLocal(mk)
	hasher, _ := keys.NewHasher(bytes.Repeat([]byte("s"), keys.MinSecretLen))
	api, err := admin.New(admin.Options{Store: st, Sealer: sealer, Hasher: hasher})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	login := func(password string) int {
		resp, err := http.Post(srv.URL+"/api/v1/auth/login", "application/json",
			strings.NewReader(`{"username":"root","password":"`+password+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	generated := regexp.MustCompile(`New password \(shown once\): (\S+)\n`)

	tests := []struct {
		name    string
		args    []string
		stdin   string
		wantErr string
		wantOut string
		// loginWith is the password that must log in afterwards ("" for the
		// generated one), loginStatus what it gets.
		loginWith   string
		loginStatus int
	}{
		{name: "no username", args: nil, wantErr: "--username is required"},
		{name: "unknown admin", args: []string{"--username", "nobody", "--password-stdin"}, stdin: "a long new password\n", wantErr: `no admin is named "nobody"`},
		{name: "short password", args: []string{"--username", "root", "--password-stdin"}, stdin: "short\n", wantErr: "password must be 12 to 1024 bytes"},
		{name: "empty stdin", args: []string{"--username", "root", "--password-stdin"}, stdin: "", wantErr: "no password on stdin"},
		{
			name: "from stdin, still disabled", args: []string{"--username", "ROOT", "--password-stdin"}, stdin: "a long new password\r\n",
			wantOut:   `Reset the password of admin "root" (disabled (use --enable to enable it)); its sessions have ended.` + "\n",
			loginWith: "a long new password", loginStatus: http.StatusUnauthorized,
		},
		{
			name: "generated and enabled", args: []string{"--username", "root", "--enable"},
			wantOut:     `Reset the password of admin "root" (enabled); its sessions have ended.` + "\n",
			loginStatus: http.StatusOK,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newRootCommand(nil)
			var out, errOut bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			cmd.SetIn(strings.NewReader(tc.stdin))
			cmd.SetArgs(append([]string{"admin", "reset-password"}, tc.args...))
			err := cmd.ExecuteContext(ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pw := tc.loginWith
			if pw == "" {
				m := generated.FindStringSubmatch(out.String())
				if m == nil || len(m[1]) != 24 {
					t.Fatalf("no generated password in %q", out.String())
				}
				pw = m[1]
			} else if strings.Contains(out.String(), pw) {
				t.Fatal("a password from stdin was printed")
			}
			if !strings.HasPrefix(out.String(), tc.wantOut) {
				t.Fatalf("output %q, want it to start with %q", out.String(), tc.wantOut)
			}
			if st := login(pw); st != tc.loginStatus {
				t.Fatalf("login with the new password: %d, want %d", st, tc.loginStatus)
			}
		})
	}
	if st := login("the original password"); st != http.StatusUnauthorized {
		t.Fatalf("the original password still logs in: %d", st)
	}
	es, _, err := st.Audit().List(ctx, store.AuditFilter{Action: "admin.password_reset"}, 10, "")
	if err != nil || len(es) != 2 || es[0].Actor != "operator" {
		t.Fatalf("audit %+v, %v", es, err)
	}
}
