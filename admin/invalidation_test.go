package admin_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/extproc/keylookup"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
)

// publisher is the admin's production Invalidator: keylookup's Redis
// publisher (as cmd/ccproxy wires it).
type publisher struct{ p *keylookup.Publisher }

func (p publisher) Invalidate(ctx context.Context, inv admin.Invalidation) error {
	return p.p.PublishKeyChange(ctx, inv.KeyHashes...)
}

// TestNarrowingChangeNotAcknowledgedWithoutInvalidation: a change that takes
// access away (revoking a key, disabling or deleting its user) is answered
// 503 problem JSON, not 2xx, while the gateways' caches cannot be told
// (Redis down). The change itself is committed, and repeating the request
// once Redis is back answers 2xx and publishes the invalidation.
func TestNarrowingChangeNotAcknowledgedWithoutInvalidation(t *testing.T) {
	rds := procs.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	const prefix = "inv-test:"
	e := newEnv(t, func(o *admin.Options) {
		o.Invalidator = publisher{keylookup.NewPublisher(rdb, prefix)}
	})

	tests := []struct {
		name   string
		method string
		path   func(userID, keyID string) string
		body   any
		ok     int
		// committed checks the change is in the database after the 503.
		committed func(t *testing.T, userID, keyID string)
	}{
		{
			name: "revoke key", method: http.MethodDelete, ok: http.StatusNoContent,
			path: func(_, keyID string) string { return "/api/v1/keys/" + keyID },
			committed: func(t *testing.T, userID, keyID string) {
				var ks struct {
					Items []struct {
						ID, Status string
					} `json:"items"`
				}
				e.do(http.MethodGet, "/api/v1/users/"+userID+"/keys", nil).decode(t, &ks)
				if len(ks.Items) != 1 || ks.Items[0].ID != keyID || ks.Items[0].Status != "revoked" {
					t.Errorf("keys after the 503 = %+v, want the key revoked", ks.Items)
				}
			},
		},
		{
			name: "disable user", method: http.MethodPatch, ok: http.StatusOK,
			path: func(userID, _ string) string { return "/api/v1/users/" + userID },
			body: map[string]any{"status": "disabled"},
			committed: func(t *testing.T, userID, _ string) {
				var u struct{ Status string }
				e.do(http.MethodGet, "/api/v1/users/"+userID, nil).decode(t, &u)
				if u.Status != "disabled" {
					t.Error("user not disabled after the 503")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			userID := e.createUser("inv-" + strings.ReplaceAll(tt.name, " ", "-"))
			var k struct{ ID, Key string }
			resp := e.do(http.MethodPost, "/api/v1/users/"+userID+"/keys", map[string]any{})
			want(t, resp, http.StatusCreated)
			resp.decode(t, &k)
			hash := hex.EncodeToString(e.hasher.Hash(k.Key))

			rds.Stop(t)
			resp = e.do(tt.method, tt.path(userID, k.ID), tt.body)
			if resp.status != http.StatusServiceUnavailable {
				t.Fatalf("with Redis down: status %d, want 503; body %s", resp.status, resp.body)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			if ra := resp.header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After = %q, want 1", ra)
			}
			tt.committed(t, userID, k.ID)

			rds.Start(t)
			ps := rdb.Subscribe(context.Background(), keylookup.ChannelName(prefix))
			defer ps.Close()
			if _, err := ps.Receive(context.Background()); err != nil {
				t.Fatal(err)
			}
			resp = e.do(tt.method, tt.path(userID, k.ID), tt.body)
			want(t, resp, tt.ok)
			msg, err := ps.ReceiveMessage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if msg.Payload != "keys "+hash {
				t.Errorf("invalidation = %q, want %q", msg.Payload, "keys "+hash)
			}
		})
	}
}
