package cli

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestAdminCommands runs the admin account commands against a real admin
// server: every secret goes in through stdin and never comes out.
func TestAdminCommands(t *testing.T) {
	h := newHarness(t)
	h.login()
	const opsPw, opsPw2, rootPw2 = "ops password number one", "ops password number two", "a new admin password"

	out := h.ok(opsPw+"\n", "admins", "create", "--username", "ops", "--password-stdin")
	m := regexp.MustCompile(`(?m)^ID:\s+(\S+)$`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "Username:    ops\n") || !strings.Contains(out, "Status:      active\n") {
		t.Fatalf("admins create printed:\n%s", out)
	}
	opsID := m[1]

	list := h.ok("", "admins", "list")
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID USERNAME ROLE SIGN_IN STATUS CREATED LAST_LOGIN" ||
		strings.Join(strings.Fields(lines[1])[1:5], " ") != adminUser+" owner password active" ||
		strings.Join(strings.Fields(lines[2])[:5], " ") != opsID+" ops admin password active" || strings.Fields(lines[2])[6] != "-" {
		t.Fatalf("admins list:\n%s", list)
	}
	steps := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"get by username", "", []string{"admins", "get", "OPS"}, "ID:          " + opsID + "\n"},
		{"get by id", "", []string{"admins", "get", opsID}, "Username:    ops\nRole:        admin\nSign-in:     password\n"},
		{"make a viewer", "", []string{"admins", "set-role", "ops", "viewer"}, "Role:        viewer\n"},
		{"and an admin again", "", []string{"admins", "set-role", opsID, "admin"}, "Role:        admin\n"},
		{"create a viewer", "a viewer's password\n", []string{"admins", "create", "--username", "auditor", "--role", "viewer", "--password-stdin"},
			"Role:        viewer\n"},
		{"disable", "", []string{"admins", "disable", "ops"}, "Disabled admin ops.\n"},
		{"disabled shows", "", []string{"admins", "get", "ops"}, "Status:      disabled\n"},
		{"enable", "", []string{"admins", "enable", opsID}, "Enabled admin " + opsID + ".\n"},
		{"reset another's password", opsPw2 + "\n", []string{"admins", "reset-password", "ops", "--password-stdin"},
			"Reset the password of admin ops; its sessions have ended.\n"},
		// ops, an owner, manages admins below.
		{"make ops an owner", "", []string{"admins", "set-role", "ops", "owner"}, "Role:        owner\n"},
		{"log ops in", opsPw2 + "\n", []string{"login", "--server", h.url, "--username", "ops", "--password-stdin"}, "as ops"},
		{"log admin in again", adminPassword + "\n", []string{"login", "--server", h.url, "--username", adminUser, "--password-stdin"}, "as admin"},
		{"end sessions", "", []string{"admins", "revoke-sessions", "ops"}, "Ended 1 session(s) of admin ops.\n"},
		{"change own password", adminPassword + "\n" + rootPw2 + "\n", []string{"passwd", "--password-stdin"},
			"Changed your password; your other sessions have ended.\n"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if out := h.ok(st.stdin, st.args...); !strings.Contains(out, st.want) {
				t.Fatalf("%v printed:\n%s\nwant %q", st.args, out, st.want)
			}
		})
	}
	// A team admin names its team; the API says so and the CLI shows it.
	if _, stderr, err := h.run("a team lead's password\n", "admins", "create", "--username", "lead", "--role", "team_admin", "--password-stdin"); err == nil ||
		!strings.Contains(stderr+err.Error(), "team_id: a team admin names its team: the id of an existing team") {
		t.Errorf("creating a team admin without a team: err %v, stderr %q", err, stderr)
	}
	var tm team
	if err := json.Unmarshal([]byte(h.ok("", "teams", "create", "--name", "Leads", "-o", "json")), &tm); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("a team lead's password\n", "admins", "create", "--username", "lead", "--role", "team_admin", "--team", tm.ID, "--password-stdin"); !strings.Contains(out, "team_admin") {
		t.Errorf("creating a team admin printed:\n%s", out)
	}
	// The session that changed the password lives on; the new passwords
	// log in.
	h.ok("", "admins", "list")
	h.ok(rootPw2+"\n", "login", "--server", h.url, "--username", adminUser, "--password-stdin")
	h.ok(opsPw2+"\n", "login", "--server", h.url, "--username", "ops", "--password-stdin")

	for _, secret := range []string{opsPw, opsPw2, rootPw2, adminPassword} {
		if strings.Contains(h.all.String(), secret) {
			t.Errorf("a password appeared in the CLI's output")
		}
	}

	errs := []struct {
		name, stdin string
		args        []string
		wantErr     string
	}{
		{"wrong current password", "not the password\n" + "another new password\n", []string{"passwd", "--password-stdin"},
			"validation failed: the request has invalid fields\n  current_password: is not the current password"},
		{"new password missing", "only one line\n", []string{"passwd", "--password-stdin"}, "no new password on stdin (line 2)"},
		{"no terminal", "", []string{"admins", "create", "--username", "x"}, "stdin is not a terminal: use --password-stdin"},
		{"unknown admin", "", []string{"admins", "disable", "nobody"}, `no admin has the id or username "nobody"`},
		{"disable yourself", "", []string{"admins", "disable", "ops"}, "conflict: you cannot disable your own account"},
		{"reset your own", "a long enough password\n", []string{"admins", "reset-password", "ops", "--password-stdin"},
			"conflict: change your own password with POST /api/v1/auth/password, which asks for the current one"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := h.run(tc.stdin, tc.args...); err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
