package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// TestOIDCFlows: a flow is taken at most once, not after it expired, and
// no more than the limit are pending at once.
func TestOIDCFlows(t *testing.T) {
	st := freshStore(t)
	ctx := testCtx(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	flow := func(state string, expires time.Time) store.OIDCFlow {
		return store.OIDCFlow{StateHash: sessionID(state), BrowserHash: sessionID("browser " + state), Nonce: "n-" + state,
			CodeVerifier: "v-" + state, ExpiresAt: expires}
	}
	if err := st.OIDCFlows().Create(ctx, flow("a", now.Add(time.Minute)), now, 2); err != nil {
		t.Fatal(err)
	}
	if err := st.OIDCFlows().Create(ctx, flow("old", now.Add(-time.Second)), now, 2); err != nil {
		t.Fatal(err)
	}
	// The expired one does not count towards the limit.
	if err := st.OIDCFlows().Create(ctx, flow("b", now.Add(time.Minute)), now, 2); err != nil {
		t.Fatal(err)
	}
	if err := st.OIDCFlows().Create(ctx, flow("c", now.Add(time.Minute)), now, 2); !errors.Is(err, store.ErrTooManyFlows) {
		t.Fatalf("third pending flow: %v, want ErrTooManyFlows", err)
	}
	got, err := st.OIDCFlows().Take(ctx, sessionID("a"), now)
	if err != nil || got.Nonce != "n-a" || got.CodeVerifier != "v-a" || string(got.BrowserHash) != string(sessionID("browser a")) {
		t.Fatalf("Take = %+v, %v", got, err)
	}
	for _, state := range []string{"a", "old", "never"} {
		if _, err := st.OIDCFlows().Take(ctx, sessionID(state), now); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Take(%s) = %v, want ErrNotFound (taken, expired or unknown)", state, err)
		}
	}
	if n, err := st.OIDCFlows().DeleteExpired(ctx, now.Add(2*time.Minute)); err != nil || n != 1 {
		t.Errorf("DeleteExpired = %d, %v; want the one left (b)", n, err)
	}
	if err := st.OIDCFlows().Create(ctx, store.OIDCFlow{StateHash: []byte("short")}, now, 2); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("malformed flow: %v", err)
	}
}

// TestAdminRolesStored: roles, team scope and single sign-on links are
// checked by the database as well as the repository.
func TestAdminRolesStored(t *testing.T) {
	st := freshStore(t)
	ctx := testCtx(t)
	plain := mustAdmin(t, st, "plain")
	if plain.Role != store.RoleAdmin || plain.TeamID != nil {
		t.Errorf("Create: role %q team %v, want admin and none", plain.Role, plain.TeamID)
	}
	team := uuid.New()
	if _, err := st.Pool().Exec(ctx, `INSERT INTO teams (id, name) VALUES ($1, 'Platform')`, team); err != nil {
		t.Fatal(err)
	}
	ta, err := st.Admins().CreateAdmin(ctx, store.NewAdmin{Username: "lead", PasswordHash: testHash, Role: store.RoleTeamAdmin, TeamID: &team})
	if err != nil || ta.TeamID == nil || *ta.TeamID != team {
		t.Fatalf("team admin: %+v, %v", ta, err)
	}
	sso, err := st.Admins().CreateAdmin(ctx, store.NewAdmin{Username: "sso@example.com", Role: store.RoleViewer, OIDCIssuer: "https://idp", OIDCSubject: "s1"})
	if err != nil || sso.PasswordHash != "" {
		t.Fatalf("sso admin: %+v, %v", sso, err)
	}
	if got, err := st.Admins().GetByOIDC(ctx, "https://idp", "s1"); err != nil || got.ID != sso.ID {
		t.Errorf("GetByOIDC = %+v, %v", got, err)
	}
	for _, tc := range []struct {
		name string
		n    store.NewAdmin
		want error
	}{
		{"unknown role", store.NewAdmin{Username: "x", PasswordHash: testHash, Role: "root"}, store.ErrInvalid},
		{"team admin without team", store.NewAdmin{Username: "x", PasswordHash: testHash, Role: store.RoleTeamAdmin}, store.ErrInvalid},
		{"team on a viewer", store.NewAdmin{Username: "x", PasswordHash: testHash, Role: store.RoleViewer, TeamID: &team}, store.ErrInvalid},
		{"neither password nor identity", store.NewAdmin{Username: "x", Role: store.RoleViewer}, store.ErrInvalid},
		{"identity linked twice", store.NewAdmin{Username: "y", Role: store.RoleViewer, OIDCIssuer: "https://idp", OIDCSubject: "s1"}, store.ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.Admins().CreateAdmin(ctx, tc.n); !errors.Is(err, tc.want) {
				t.Errorf("CreateAdmin = %v, want %v", err, tc.want)
			}
		})
	}
	if err := st.Admins().SetRole(ctx, plain.ID, store.RoleOwner, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Admins().CountEnabledOwners(ctx); err != nil || n != 1 {
		t.Errorf("CountEnabledOwners = %d, %v", n, err)
	}
	// The database refuses what the repository would: a team admin without
	// a team.
	if _, err := st.Pool().Exec(ctx, `UPDATE admins SET team_id = NULL WHERE id = $1`, ta.ID); err == nil {
		t.Error("the database accepted a team admin without a team")
	}
}
