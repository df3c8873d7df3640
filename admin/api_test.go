package admin_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

// TestAPI runs every endpoint against one server and database; the
// subtests share state in order (a user created first is used later).
func TestAPI(t *testing.T) {
	e := newEnv(t)

	t.Run("every endpoint needs auth", func(t *testing.T) {
		routes := []struct{ method, path string }{
			{"POST", "/api/v1/auth/logout"}, {"POST", "/api/v1/auth/password"},
			{"GET", "/api/v1/admins"}, {"POST", "/api/v1/admins"},
			{"GET", "/api/v1/admins/" + randomID}, {"PATCH", "/api/v1/admins/" + randomID},
			{"PUT", "/api/v1/admins/" + randomID + "/password"}, {"DELETE", "/api/v1/admins/" + randomID + "/sessions"},
			{"POST", "/api/v1/users"}, {"GET", "/api/v1/users"},
			{"GET", "/api/v1/users/" + randomID}, {"PATCH", "/api/v1/users/" + randomID}, {"DELETE", "/api/v1/users/" + randomID},
			{"POST", "/api/v1/users/" + randomID + "/keys"}, {"GET", "/api/v1/users/" + randomID + "/keys"},
			{"POST", "/api/v1/keys/" + randomID + "/rotate"}, {"DELETE", "/api/v1/keys/" + randomID},
			{"PUT", "/api/v1/users/" + randomID + "/bedrock"}, {"DELETE", "/api/v1/users/" + randomID + "/bedrock"},
			{"PUT", "/api/v1/keys/" + randomID + "/bedrock"}, {"DELETE", "/api/v1/keys/" + randomID + "/bedrock"},
			{"GET", "/api/v1/users/" + randomID + "/rate-limits"}, {"PUT", "/api/v1/users/" + randomID + "/rate-limits"},
			{"DELETE", "/api/v1/users/" + randomID + "/rate-limits"},
			{"GET", "/api/v1/keys/" + randomID + "/rate-limits"}, {"PUT", "/api/v1/keys/" + randomID + "/rate-limits"},
			{"DELETE", "/api/v1/keys/" + randomID + "/rate-limits"},
			{"GET", "/api/v1/usage"}, {"GET", "/api/v1/usage/requests"},
			{"POST", "/api/v1/models"}, {"GET", "/api/v1/models"},
			{"GET", "/api/v1/models/" + randomID}, {"PATCH", "/api/v1/models/" + randomID}, {"DELETE", "/api/v1/models/" + randomID},
			{"POST", "/api/v1/prices"}, {"GET", "/api/v1/prices"},
			{"GET", "/api/v1/prices/" + randomID}, {"PATCH", "/api/v1/prices/" + randomID}, {"DELETE", "/api/v1/prices/" + randomID},
			{"GET", "/api/v1/audit"},
		}
		for _, rt := range routes {
			for _, tc := range []struct {
				name string
				opt  reqOption
			}{
				{"none", noAuth},
				{"garbage bearer", withHeader("Authorization", "Bearer not-a-token")},
				{"unknown session", withHeader("Authorization", "Bearer "+strings.Repeat("A", 43))},
				{"basic", withHeader("Authorization", "Basic cm9vdDpwdw==")},
			} {
				t.Run(rt.method+" "+rt.path+" "+tc.name, func(t *testing.T) {
					resp := e.do(rt.method, rt.path, map[string]any{}, tc.opt)
					want(t, resp, http.StatusUnauthorized)
					if p := resp.problem(t); p.Title != "unauthorized" {
						t.Errorf("title %q", p.Title)
					}
				})
			}
		}
	})

	t.Run("openapi document", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/openapi.json", nil, noAuth)
		want(t, resp, http.StatusOK)
		if string(resp.body) != string(admin.OpenAPI()) {
			t.Error("served document differs from admin.OpenAPI()")
		}
	})

	var userID string
	t.Run("users", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/users", map[string]any{
			"name": "Ada", "email": "ada@example.com", "routing_strategy": "bedrock_only", "monthly_budget_usd": "12.5",
		})
		want(t, resp, http.StatusCreated)
		var u struct {
			ID, Name, RoutingStrategy, Status string
			Email                             *string
			Budget                            *string `json:"monthly_budget_usd"`
			Strategy                          string  `json:"routing_strategy"`
		}
		resp.decode(t, &u)
		userID = u.ID
		if u.Name != "Ada" || *u.Email != "ada@example.com" || *u.Budget != "12.50" || u.Strategy != "bedrock_only" || u.Status != "active" {
			t.Errorf("created user %+v", u)
		}
		if loc := resp.header.Get("Location"); loc != "/api/v1/users/"+userID {
			t.Errorf("Location %q", loc)
		}

		want(t, e.do("GET", "/api/v1/users/"+userID, nil), http.StatusOK)

		resp = e.do("PATCH", "/api/v1/users/"+userID, rawBody(`{"email":null,"monthly_budget_usd":null,"name":"Ada L."}`))
		want(t, resp, http.StatusOK)
		resp.decode(t, &u)
		if u.Email != nil || u.Budget != nil || u.Name != "Ada L." || u.Strategy != "bedrock_only" {
			t.Errorf("patched user %+v", u)
		}
		if got, wantA := e.auditActions(userID), []string{"user.create", "user.update"}; !slices.Equal(got, wantA) {
			t.Errorf("audit %v, want %v", got, wantA)
		}
		inv := e.inv.all()
		if len(inv) == 0 || inv[len(inv)-1].UserID.String() != userID {
			t.Errorf("no invalidation for the user change: %+v", inv)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		big := `{"name":"` + strings.Repeat("x", 70<<10) + `"}`
		tests := []struct {
			name, method, path string
			body               any
			opts               []reqOption
			status             int
			fields             []string
		}{
			{"unknown field", "POST", "/api/v1/users", rawBody(`{"name":"a","admin":true}`), nil, 400, []string{"admin"}},
			{"wrong type", "POST", "/api/v1/users", rawBody(`{"name":"a","monthly_budget_usd":12.5}`), nil, 400, []string{"monthly_budget_usd"}},
			{"malformed", "POST", "/api/v1/users", rawBody(`{"name":`), nil, 400, nil},
			{"two values", "POST", "/api/v1/users", rawBody(`{"name":"a"}{"name":"b"}`), nil, 400, nil},
			{"empty body", "POST", "/api/v1/users", rawBody(``), nil, 400, nil},
			{"oversized", "POST", "/api/v1/users", rawBody(big), nil, 413, nil},
			{"not json", "POST", "/api/v1/users", rawBody(`name=a`), []reqOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, 415, nil},
			{"validation", "POST", "/api/v1/users", map[string]any{"name": "", "email": "nope", "routing_strategy": "cheapest", "monthly_budget_usd": "-1"}, nil, 422,
				[]string{"name", "email", "routing_strategy", "monthly_budget_usd"}},
			{"budget precision", "POST", "/api/v1/users", map[string]any{"name": "a", "monthly_budget_usd": "1.005"}, nil, 422, []string{"monthly_budget_usd"}},
			{"null name", "PATCH", "/api/v1/users/" + userID, rawBody(`{"name":null}`), nil, 422, []string{"name"}},
			{"bad status", "PATCH", "/api/v1/users/" + userID, map[string]any{"status": "gone"}, nil, 422, []string{"status"}},
			{"bad limit", "GET", "/api/v1/users?limit=0", nil, nil, 422, []string{"limit"}},
			{"bad cursor", "GET", "/api/v1/users?cursor=%27%3B%20DROP%20TABLE%20users%3B--", nil, nil, 422, nil},
			{"bad grace", "POST", "/api/v1/keys/" + randomID + "/rotate", map[string]any{"grace_period_seconds": -1}, nil, 422, []string{"grace_period_seconds"}},
			{"bad group_by", "GET", "/api/v1/usage?group_by=week", nil, nil, 422, []string{"group_by"}},
			{"bad user_id", "GET", "/api/v1/usage?user_id=1%20OR%201=1", nil, nil, 422, []string{"user_id"}},
			{"bad time", "GET", "/api/v1/usage/requests?from=yesterday", nil, nil, 422, []string{"from"}},
			{"bad audit cursor", "GET", "/api/v1/audit?cursor=abc", nil, nil, 422, nil},
			{"bad provider", "GET", "/api/v1/prices?provider=openai", nil, nil, 422, []string{"provider"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.do(tc.method, tc.path, tc.body, tc.opts...)
				want(t, resp, tc.status)
				p := resp.problem(t)
				if tc.fields != nil && !slices.Equal(p.fields(), tc.fields) {
					t.Errorf("fields %v, want %v", p.fields(), tc.fields)
				}
			})
		}
	})

	t.Run("sql-looking input is plain data", func(t *testing.T) {
		name := `Robert'); DROP TABLE users;--`
		resp := e.do("POST", "/api/v1/users", map[string]any{"name": name, "email": `x'--@example.com`})
		want(t, resp, http.StatusCreated)
		var u struct{ ID, Name string }
		resp.decode(t, &u)
		if u.Name != name {
			t.Errorf("name %q", u.Name)
		}
		want(t, e.do("GET", "/api/v1/users/"+u.ID, nil), http.StatusOK)
		want(t, e.do("GET", "/api/v1/users/1%20OR%201=1", nil), http.StatusNotFound)
		want(t, e.do("GET", "/api/v1/audit?action=%27%20OR%20%271%27=%271", nil), http.StatusOK)
	})

	t.Run("not found", func(t *testing.T) {
		for _, tc := range []struct{ method, path string }{
			{"GET", "/api/v1/users/" + randomID}, {"PATCH", "/api/v1/users/" + randomID}, {"DELETE", "/api/v1/users/" + randomID},
			{"GET", "/api/v1/users/not-a-uuid"}, {"POST", "/api/v1/users/" + randomID + "/keys"}, {"GET", "/api/v1/users/" + randomID + "/keys"},
			{"POST", "/api/v1/keys/" + randomID + "/rotate"}, {"DELETE", "/api/v1/keys/" + randomID},
			{"DELETE", "/api/v1/users/" + randomID + "/bedrock"}, {"DELETE", "/api/v1/keys/" + randomID + "/bedrock"},
			{"GET", "/api/v1/models/" + randomID}, {"DELETE", "/api/v1/models/" + randomID},
			{"GET", "/api/v1/prices/" + randomID}, {"DELETE", "/api/v1/prices/" + randomID},
			{"GET", "/api/v1/nothing"},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				var body any
				if tc.method == "PATCH" || tc.method == "POST" {
					body = map[string]any{}
				}
				resp := e.do(tc.method, tc.path, body)
				want(t, resp, http.StatusNotFound)
				resp.problem(t)
			})
		}
		resp := e.do("PUT", "/api/v1/users/"+randomID+"/bedrock", map[string]any{"type": "aws_default_chain", "region": "us-east-1"})
		want(t, resp, http.StatusNotFound)
	})

	t.Run("pagination", func(t *testing.T) {
		for _, n := range []string{"p1", "p2", "p3"} {
			e.createUser(n)
		}
		seen := map[string]bool{}
		cursor := ""
		pages := 0
		for {
			path := "/api/v1/users?limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			resp := e.do("GET", path, nil)
			want(t, resp, http.StatusOK)
			var pg struct {
				Items      []struct{ ID string }
				NextCursor *string `json:"next_cursor"`
			}
			resp.decode(t, &pg)
			pages++
			for _, it := range pg.Items {
				if seen[it.ID] {
					t.Fatalf("user %s on two pages", it.ID)
				}
				seen[it.ID] = true
			}
			if pg.NextCursor == nil {
				break
			}
			cursor = *pg.NextCursor
		}
		if len(seen) != 5 || pages != 3 {
			t.Errorf("%d users on %d pages, want 5 on 3", len(seen), pages)
		}
	})

	var keyID, keySecret string
	t.Run("keys", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/users/"+userID+"/keys", map[string]any{"name": "laptop"})
		want(t, resp, http.StatusCreated)
		var k struct{ ID, Key, Prefix, Status, Name string }
		resp.decode(t, &k)
		keyID, keySecret = k.ID, k.Key
		if !strings.HasPrefix(k.Key, "ak_") || !strings.HasPrefix(k.Key, k.Prefix) || k.Status != "active" || k.Name != "laptop" {
			t.Errorf("issued key %+v", k)
		}
		// A key can be issued with no body at all.
		want(t, e.do("POST", "/api/v1/users/"+userID+"/keys", nil), http.StatusCreated)

		resp = e.do("GET", "/api/v1/users/"+userID+"/keys", nil)
		want(t, resp, http.StatusOK)
		if strings.Contains(string(resp.body), keySecret) || strings.Contains(string(resp.body), `"key"`) {
			t.Errorf("key list shows a key: %s", resp.body)
		}

		resp = e.do("POST", "/api/v1/keys/"+keyID+"/rotate", map[string]any{"grace_period_seconds": 60})
		want(t, resp, http.StatusCreated)
		var rot struct {
			ID, Key  string
			Previous struct {
				ID, Status string
				RotatedTo  string `json:"rotated_to"`
			}
		}
		resp.decode(t, &rot)
		if rot.Previous.ID != keyID || rot.Previous.Status != "rotating" || rot.Previous.RotatedTo != rot.ID || rot.Key == keySecret {
			t.Errorf("rotation %+v", rot)
		}
		// Only an active key can be rotated.
		resp = e.do("POST", "/api/v1/keys/"+keyID+"/rotate", nil)
		want(t, resp, http.StatusConflict)
		resp.problem(t)

		want(t, e.do("DELETE", "/api/v1/keys/"+rot.ID, nil), http.StatusNoContent)
		want(t, e.do("DELETE", "/api/v1/keys/"+rot.ID, nil), http.StatusNoContent)
		k2, err := e.st.AccessKeys().Get(context.Background(), uuid.MustParse(rot.ID))
		if err != nil || k2.Status != store.KeyRevoked {
			t.Errorf("after revoke: %+v, %v", k2, err)
		}
		if got := e.auditActions(rot.ID); !slices.Equal(got, []string{"key.revoke"}) {
			t.Errorf("audit of new key %v", got)
		}
		if got := e.auditActions(keyID); !slices.Equal(got, []string{"key.create", "key.rotate"}) {
			t.Errorf("audit of old key %v", got)
		}
		inv := e.inv.all()
		last := inv[len(inv)-1]
		if len(last.KeyIDs) != 1 || last.KeyIDs[0] != k2.ID || string(last.KeyHashes[0]) != string(k2.Hash) {
			t.Errorf("revocation invalidation %+v", last)
		}
		keyID = rot.Previous.ID
	})

	// A key's own routing strategy overrides its user's (bedrock_only
	// here) in what the data path looks up, and survives rotation.
	t.Run("key with its own routing strategy", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/users/"+userID+"/keys", map[string]any{"name": "ci", "routing_strategy": "plan_only"})
		want(t, resp, http.StatusCreated)
		var k struct {
			ID, Key  string
			Strategy *string `json:"routing_strategy"`
		}
		resp.decode(t, &k)
		if k.Strategy == nil || *k.Strategy != "plan_only" {
			t.Fatalf("issued key routing_strategy = %v, want plan_only", k.Strategy)
		}
		ctx := context.Background()
		l, err := e.st.AccessKeys().LookupByHash(ctx, e.hasher.Hash(k.Key))
		if err != nil {
			t.Fatal(err)
		}
		if l.Key.RoutingStrategy == nil || *l.Key.RoutingStrategy != store.PlanOnly || l.User.RoutingStrategy != store.BedrockOnly {
			t.Fatalf("lookup: key strategy %v, user strategy %q; want plan_only over bedrock_only", l.Key.RoutingStrategy, l.User.RoutingStrategy)
		}
		resp = e.do("POST", "/api/v1/keys/"+k.ID+"/rotate", map[string]any{"grace_period_seconds": 0})
		want(t, resp, http.StatusCreated)
		var rot struct {
			Strategy *string `json:"routing_strategy"`
		}
		resp.decode(t, &rot)
		if rot.Strategy == nil || *rot.Strategy != "plan_only" {
			t.Fatalf("rotated key routing_strategy = %v, want plan_only", rot.Strategy)
		}
		resp = e.do("POST", "/api/v1/users/"+userID+"/keys", map[string]any{"routing_strategy": "cheapest"})
		want(t, resp, http.StatusUnprocessableEntity)
		if p := resp.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "routing_strategy" {
			t.Fatalf("invalid strategy: %+v", p)
		}
	})

	const bedrockSecret = "ABSKbedrock-secret-never-shown-0123456789"
	t.Run("bedrock", func(t *testing.T) {
		resp := e.do("PUT", "/api/v1/users/"+userID+"/bedrock", map[string]any{"type": "api_key", "api_key": bedrockSecret, "region": "us-west-2"})
		want(t, resp, http.StatusNoContent)
		c, err := e.st.Credentials().GetForUser(context.Background(), uuid.MustParse(userID))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := e.sealer.Open(context.Background(), c.SecretCiphertext, admin.CredentialAAD(c.UserID))
		if err != nil || string(plain) != bedrockSecret || c.Region != "us-west-2" {
			t.Errorf("stored credential opens to %q, %v (region %s)", plain, err, c.Region)
		}

		want(t, e.do("PUT", "/api/v1/keys/"+keyID+"/bedrock", map[string]any{"type": "aws_default_chain", "region": "eu-central-1"}), http.StatusNoContent)
		want(t, e.do("PUT", "/api/v1/keys/"+keyID+"/bedrock", map[string]any{"type": "api_key", "api_key": bedrockSecret, "region": "eu-central-1"}), http.StatusNoContent)

		for _, tc := range []struct {
			name   string
			body   map[string]any
			fields []string
		}{
			{"api_key missing", map[string]any{"type": "api_key", "region": "us-east-1"}, []string{"api_key"}},
			{"api_key with chain", map[string]any{"type": "aws_default_chain", "api_key": "x", "region": "us-east-1"}, []string{"api_key"}},
			{"bad type and region", map[string]any{"type": "iam", "region": "mars"}, []string{"type", "region"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.do("PUT", "/api/v1/users/"+userID+"/bedrock", tc.body)
				want(t, resp, http.StatusUnprocessableEntity)
				if p := resp.problem(t); !slices.Equal(p.fields(), tc.fields) {
					t.Errorf("fields %v, want %v", p.fields(), tc.fields)
				}
			})
		}

		want(t, e.do("DELETE", "/api/v1/keys/"+keyID+"/bedrock", nil), http.StatusNoContent)
		want(t, e.do("DELETE", "/api/v1/keys/"+keyID+"/bedrock", nil), http.StatusNotFound)
		if got := e.auditActions(userID); !slices.Contains(got, "bedrock.user.put") {
			t.Errorf("audit %v has no bedrock.user.put", got)
		}
		if got := e.auditActions(keyID); !slices.Equal(got[len(got)-3:], []string{"bedrock.key.put", "bedrock.key.put", "bedrock.key.delete"}) {
			t.Errorf("audit %v", got)
		}
	})

	var modelID string
	t.Run("models", func(t *testing.T) {
		resp := e.do("POST", "/api/v1/models", map[string]any{
			"anthropic_model_id": "claude-test-4", "family": "test", "bedrock_model_id": "anthropic.claude-test-4-v1:0",
			"aliases": []string{"claude-test-latest"}, "regions": map[string]string{"": "us.anthropic.claude-test-4-v1:0"},
		})
		want(t, resp, http.StatusCreated)
		var m struct {
			ID      string
			Enabled bool
			Aliases []string
		}
		resp.decode(t, &m)
		modelID = m.ID
		if !m.Enabled || !slices.Equal(m.Aliases, []string{"claude-test-latest"}) {
			t.Errorf("model %+v", m)
		}
		resp = e.do("POST", "/api/v1/models", map[string]any{"anthropic_model_id": "claude-test-4", "family": "test", "bedrock_model_id": "x"})
		want(t, resp, http.StatusConflict)
		resp = e.do("POST", "/api/v1/models", map[string]any{"anthropic_model_id": "bad id", "family": "", "bedrock_model_id": "x"})
		want(t, resp, http.StatusUnprocessableEntity)
		want(t, e.do("GET", "/api/v1/models", nil), http.StatusOK)
		resp = e.do("PATCH", "/api/v1/models/"+modelID, map[string]any{"enabled": false, "aliases": []string{}})
		want(t, resp, http.StatusOK)
		resp.decode(t, &m)
		if m.Enabled || len(m.Aliases) != 0 {
			t.Errorf("patched model %+v", m)
		}
		want(t, e.do("GET", "/api/v1/models/"+modelID, nil), http.StatusOK)
		want(t, e.do("DELETE", "/api/v1/models/"+modelID, nil), http.StatusNoContent)
		want(t, e.do("GET", "/api/v1/models/"+modelID, nil), http.StatusNotFound)
		if got := e.auditActions(modelID); !slices.Equal(got, []string{"model.create", "model.update", "model.delete"}) {
			t.Errorf("audit %v", got)
		}
	})

	t.Run("prices", func(t *testing.T) {
		body := map[string]any{
			"provider": "bedrock", "model_id": "claude-test-4", "effective_from": "2026-01-01T00:00:00Z",
			"input_usd_per_mtok": "3", "output_usd_per_mtok": "15.00", "cache_read_usd_per_mtok": "0.30",
			"cache_write_5m_usd_per_mtok": "3.75", "cache_write_1h_usd_per_mtok": "6",
		}
		resp := e.do("POST", "/api/v1/prices", body)
		want(t, resp, http.StatusCreated)
		var p struct {
			ID     string
			Output string `json:"output_usd_per_mtok"`
			Input  string `json:"input_usd_per_mtok"`
		}
		resp.decode(t, &p)
		if p.Output != "15" || p.Input != "3" {
			t.Errorf("price %+v", p)
		}
		bad := map[string]any{"provider": "bedrock", "effective_from": "2026-01-01T00:00:00Z", "input_usd_per_mtok": "-3",
			"output_usd_per_mtok": "1e3", "cache_read_usd_per_mtok": "0", "cache_write_5m_usd_per_mtok": "0", "cache_write_1h_usd_per_mtok": "0"}
		resp = e.do("POST", "/api/v1/prices", bad)
		want(t, resp, http.StatusUnprocessableEntity)
		if f := resp.problem(t).fields(); !slices.Equal(f, []string{"input_usd_per_mtok", "output_usd_per_mtok"}) {
			t.Errorf("fields %v", f)
		}
		resp = e.do("PATCH", "/api/v1/prices/"+p.ID, map[string]any{"output_usd_per_mtok": "16.5", "source": "list price"})
		want(t, resp, http.StatusOK)
		resp.decode(t, &p)
		if p.Output != "16.5" || p.Input != "3" {
			t.Errorf("patched price %+v", p)
		}
		resp = e.do("PATCH", "/api/v1/prices/"+p.ID, map[string]any{"effective_to": "2025-01-01T00:00:00Z"})
		want(t, resp, http.StatusUnprocessableEntity)
		want(t, e.do("GET", "/api/v1/prices?provider=bedrock", nil), http.StatusOK)
		want(t, e.do("GET", "/api/v1/prices/"+p.ID, nil), http.StatusOK)
		want(t, e.do("DELETE", "/api/v1/prices/"+p.ID, nil), http.StatusNoContent)
		if got := e.auditActions(p.ID); !slices.Equal(got, []string{"price.create", "price.update", "price.delete"}) {
			t.Errorf("audit %v", got)
		}
	})

	t.Run("usage", func(t *testing.T) {
		uid := uuid.MustParse(userID)
		kid := uuid.MustParse(keyID)
		at := time.Date(2026, 3, 4, 10, 15, 0, 0, time.UTC)
		evs := []store.UsageEvent{
			{RequestID: "req-1", EventTime: at, UserID: uid, AccessKeyID: kid, SessionID: "s1", Kind: store.KindMessages,
				RequestedModel: "claude-test-4", Provider: store.ProviderBedrock, Region: "us-west-2", Status: 200,
				InputTokens: 1000, OutputTokens: 200, CostUSD: decimal.RequireFromString("0.0060"), PriceFlag: store.PriceExact, LatencyMs: 900},
			{RequestID: "req-2", EventTime: at.Add(time.Minute), UserID: uid, AccessKeyID: kid, SessionID: "s1", Kind: store.KindMessages,
				RequestedModel: "claude-test-4", Provider: store.ProviderAnthropic, Status: 200,
				InputTokens: 10, OutputTokens: 5, CostUSD: decimal.RequireFromString("0.0001"), PriceFlag: store.PriceExact, LatencyMs: 100},
		}
		if _, err := e.st.Usage().InsertEvents(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
		resp := e.do("GET", "/api/v1/usage?user_id="+userID+"&from=2026-03-04T00:00:00Z&to=2026-03-05T00:00:00Z&group_by=provider", nil)
		want(t, resp, http.StatusOK)
		var u struct {
			Groups []struct {
				Key          string
				Requests     int64
				InputTokens  int64  `json:"input_tokens"`
				BedrockCost  string `json:"bedrock_cost_usd"`
				PlanCost     string `json:"plan_cost_usd"`
				OutputTokens int64  `json:"output_tokens"`
			}
		}
		resp.decode(t, &u)
		if len(u.Groups) != 2 || u.Groups[0].Key != "anthropic" || u.Groups[0].PlanCost != "0.0001" ||
			u.Groups[1].Key != "bedrock" || u.Groups[1].InputTokens != 1000 || u.Groups[1].BedrockCost != "0.006" {
			t.Errorf("usage %s", resp.body)
		}
		want(t, e.do("GET", "/api/v1/usage?group_by=session&from=2026-03-04T00:00:00Z&to=2026-03-05T00:00:00Z", nil), http.StatusOK)
		resp = e.do("GET", "/api/v1/usage/requests?user_id="+userID+"&limit=1", nil)
		want(t, resp, http.StatusOK)
		var rq struct {
			Items []struct {
				RequestID string `json:"request_id"`
				CostUSD   string `json:"cost_usd"`
			}
			NextCursor *string `json:"next_cursor"`
		}
		resp.decode(t, &rq)
		if len(rq.Items) != 1 || rq.Items[0].RequestID != "req-2" || rq.NextCursor == nil {
			t.Fatalf("requests %s", resp.body)
		}
		resp = e.do("GET", "/api/v1/usage/requests?user_id="+userID+"&limit=1&cursor="+*rq.NextCursor, nil)
		resp.decode(t, &rq)
		if len(rq.Items) != 1 || rq.Items[0].RequestID != "req-1" || rq.Items[0].CostUSD != "0.006" {
			t.Errorf("second page %s", resp.body)
		}
	})

	t.Run("delete user", func(t *testing.T) {
		want(t, e.do("DELETE", "/api/v1/users/"+userID, nil), http.StatusNoContent)
		want(t, e.do("GET", "/api/v1/users/"+userID, nil), http.StatusNotFound)
		want(t, e.do("DELETE", "/api/v1/users/"+userID, nil), http.StatusNotFound)
		k, err := e.st.AccessKeys().Get(context.Background(), uuid.MustParse(keyID))
		if err != nil || k.Status != store.KeyRevoked {
			t.Errorf("key after user delete: %s, %v", k.Status, err)
		}
		if got := e.auditActions(userID); got[len(got)-1] != "user.delete" {
			t.Errorf("audit %v", got)
		}
	})

	t.Run("audit list", func(t *testing.T) {
		resp := e.do("GET", "/api/v1/audit?action=user.create&limit=2", nil)
		want(t, resp, http.StatusOK)
		var pg struct {
			Items []struct {
				Action, Actor string
				After         map[string]any
				IP            *string
			}
			NextCursor *string `json:"next_cursor"`
		}
		resp.decode(t, &pg)
		if len(pg.Items) != 2 || pg.NextCursor == nil || pg.Items[0].Actor != testAdmin || pg.Items[0].Action != "user.create" ||
			pg.Items[0].IP == nil || pg.Items[0].After["id"] == nil {
			t.Errorf("audit page %s", resp.body)
		}
		want(t, e.do("GET", "/api/v1/audit?limit=2&cursor="+*pg.NextCursor, nil), http.StatusOK)
	})

	t.Run("secrets never returned or logged", func(t *testing.T) {
		es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{}, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		var audit strings.Builder
		for _, a := range es {
			audit.Write(a.Before)
			audit.Write(a.After)
		}
		for name, text := range map[string]string{"responses": e.allBodies(), "logs": e.logs.String(), "audit": audit.String()} {
			if strings.Contains(text, bedrockSecret) {
				t.Errorf("the Bedrock api_key appears in the %s", name)
			}
			if strings.Contains(text, testPassword) {
				t.Errorf("the admin password appears in the %s", name)
			}
			if name != "responses" && (strings.Contains(text, keySecret) || strings.Contains(text, e.token)) {
				t.Errorf("an access key or session token appears in the %s", name)
			}
		}
		if !strings.Contains(e.logs.String(), `"route":"POST /api/v1/users"`) {
			t.Error("no request logs captured")
		}
	})
}
