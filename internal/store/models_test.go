package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/google/uuid"
)

func TestSeededModelMappings(t *testing.T) {
	ctx := testCtx(t)
	tests := []struct {
		name        string
		model       string
		region      string
		wantID      string
		wantFamily  string
		wantBase    string
		wantProfile string // "" means unmappable from region
	}{
		{"opus 5.5 us", "claude-opus-5-5", "us-east-1", "claude-opus-5-5", "opus", "anthropic.claude-opus-5-5", "us.anthropic.claude-opus-5-5"},
		{"opus 5.5 elsewhere: global", "claude-opus-5-5", "eu-west-1", "claude-opus-5-5", "opus", "anthropic.claude-opus-5-5", "global.anthropic.claude-opus-5-5"},
		{"sonnet 4.5 alias in tokyo", "claude-sonnet-4-5", "ap-northeast-1", "claude-sonnet-4-5-20250929", "sonnet", "anthropic.claude-sonnet-4-5-20250929-v1:0", "jp.anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{"sonnet 4.5 in frankfurt", "claude-sonnet-4-5-20250929", "eu-central-1", "claude-sonnet-4-5-20250929", "sonnet", "anthropic.claude-sonnet-4-5-20250929-v1:0", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{"opus 4.6 irregular id, sydney", "claude-opus-4-6", "ap-southeast-2", "claude-opus-4-6", "opus", "anthropic.claude-opus-4-6-v1", "au.anthropic.claude-opus-4-6-v1"},
		{"opus 4.6 seoul: apac", "claude-opus-4-6", "ap-northeast-2", "claude-opus-4-6", "opus", "anthropic.claude-opus-4-6-v1", "apac.anthropic.claude-opus-4-6-v1"},
		{"haiku 4.5 alias", "claude-haiku-4-5", "us-west-2", "claude-haiku-4-5-20251001", "haiku", "anthropic.claude-haiku-4-5-20251001-v1:0", "us.anthropic.claude-haiku-4-5-20251001-v1:0"},
		{"opus 4.1 only in the us", "claude-opus-4-1", "eu-west-1", "claude-opus-4-1-20250805", "opus", "anthropic.claude-opus-4-1-20250805-v1:0", ""},
		{"sonnet 4.6 dateless", "claude-sonnet-4-6", "sa-east-1", "claude-sonnet-4-6", "sonnet", "anthropic.claude-sonnet-4-6", "global.anthropic.claude-sonnet-4-6"},
		{"3.5 haiku", "claude-3-5-haiku-latest", "us-east-2", "claude-3-5-haiku-20241022", "haiku", "anthropic.claude-3-5-haiku-20241022-v1:0", "us.anthropic.claude-3-5-haiku-20241022-v1:0"},
		{"fable 5.1", "claude-fable-5-1", "us-east-1", "claude-fable-5-1", "fable", "anthropic.claude-fable-5-1", "us.anthropic.claude-fable-5-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := testStore.Models().Resolve(ctx, tc.model)
			if err != nil {
				t.Fatal(err)
			}
			if m.AnthropicModelID != tc.wantID || m.Family != tc.wantFamily || m.BedrockModelID != tc.wantBase || !m.Enabled {
				t.Fatalf("mapping %+v", m)
			}
			p, ok := m.ProfileFor(tc.region)
			if p != tc.wantProfile || ok != (tc.wantProfile != "") {
				t.Fatalf("ProfileFor(%s) = %q, %v; want %q", tc.region, p, ok, tc.wantProfile)
			}
		})
	}
}

// The seed maps the model Claude Code 2.1.332 asks for in Anthropic mode to
// the very id it invokes itself in Bedrock mode (us-east-1 default region).
func TestSeedMatchesClaudeCodeBedrockMode(t *testing.T) {
	dir := "../../testdata/claude-code-2.1.332/"
	var body struct{ Model string }
	var req struct{ Path string }
	for file, v := range map[string]any{"anthropic-turn1.body.json": &body, "bedrock-mode-turn1.request.json": &req} {
		raw, err := os.ReadFile(dir + file)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	m, err := testStore.Models().Resolve(testCtx(t), body.Model)
	if err != nil {
		t.Fatal(err)
	}
	profile, _ := m.ProfileFor("us-east-1")
	if want := "/model/" + profile + "/invoke-with-response-stream"; !strings.HasSuffix(req.Path, want) {
		t.Fatalf("Claude Code invoked %s; the seed gives %s", req.Path, want)
	}
}

func TestModelMappingCRUD(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	models := st.Models()
	seeded, err := models.ListEnabled(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) != 17 {
		t.Fatalf("seeded %d enabled mappings, want 17", len(seeded))
	}

	m, err := models.Create(ctx, store.NewModelMapping{
		AnthropicModelID: "claude-test-9-20270101",
		Aliases:          []string{"claude-test-9", "claude-test-latest"},
		Family:           "sonnet",
		BedrockModelID:   "anthropic.claude-test-9-20270101-v1:0",
		Regions:          map[string]string{"us-east-1": "us.anthropic.claude-test-9-20270101-v1:0", "": "global.anthropic.claude-test-9-20270101-v1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Enabled || !slices.Equal(m.Aliases, []string{"claude-test-9", "claude-test-latest"}) || len(m.Regions) != 2 ||
		m.Regions["us-east-1"] != "us.anthropic.claude-test-9-20270101-v1:0" {
		t.Fatalf("created %+v", m)
	}
	if r, err := models.Resolve(ctx, "claude-test-latest"); err != nil || r.ID != m.ID {
		t.Fatalf("Resolve alias = %+v, %v", r, err)
	}

	tests := []struct {
		name string
		nm   store.NewModelMapping
		want error
	}{
		{"id taken", store.NewModelMapping{AnthropicModelID: "claude-test-9-20270101", Family: "sonnet", BedrockModelID: "x"}, store.ErrConflict},
		{"id is an alias", store.NewModelMapping{AnthropicModelID: "claude-test-9", Family: "sonnet", BedrockModelID: "x"}, store.ErrConflict},
		{"alias is an id", store.NewModelMapping{AnthropicModelID: "claude-other", Aliases: []string{"claude-opus-5-5"}, Family: "opus", BedrockModelID: "x"}, store.ErrConflict},
		{"alias taken", store.NewModelMapping{AnthropicModelID: "claude-other", Aliases: []string{"claude-sonnet-4-5"}, Family: "opus", BedrockModelID: "x"}, store.ErrConflict},
		{"bad family", store.NewModelMapping{AnthropicModelID: "claude-other", Family: "Opus!", BedrockModelID: "x"}, store.ErrInvalid},
		{"bad region", store.NewModelMapping{AnthropicModelID: "claude-other", Family: "opus", BedrockModelID: "x", Regions: map[string]string{"mars": "x"}}, store.ErrInvalid},
		{"no bedrock id", store.NewModelMapping{AnthropicModelID: "claude-other", Family: "opus"}, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := models.Create(ctx, tc.nm); !errors.Is(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
		})
	}
	// A failed create leaves nothing behind.
	if _, err := models.Resolve(ctx, "claude-other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Resolve after failed creates = %v", err)
	}

	u, err := models.Update(ctx, m.ID, store.ModelMappingPatch{
		Aliases: store.Some([]string{"claude-test-9-new"}),
		Regions: store.Some(map[string]string{"eu-west-1": "eu.anthropic.claude-test-9-20270101-v1:0"}),
		Enabled: store.Some(false),
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.Enabled || !slices.Equal(u.Aliases, []string{"claude-test-9-new"}) ||
		!maps.Equal(u.Regions, map[string]string{"eu-west-1": "eu.anthropic.claude-test-9-20270101-v1:0"}) ||
		u.BedrockModelID != m.BedrockModelID || !u.UpdatedAt.After(m.UpdatedAt) {
		t.Fatalf("updated %+v", u)
	}
	if _, ok := u.ProfileFor("us-east-1"); ok {
		t.Fatal("region removed by update still maps")
	}
	if _, err := models.Resolve(ctx, "claude-test-latest"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Resolve replaced alias = %v", err)
	}
	enabled, err := models.ListEnabled(ctx)
	if err != nil || len(enabled) != 17 {
		t.Fatalf("ListEnabled after disabling = %d, %v", len(enabled), err)
	}
	all, err := models.List(ctx)
	if err != nil || len(all) != 18 {
		t.Fatalf("List = %d, %v", len(all), err)
	}
	if got, err := models.Get(ctx, m.ID); err != nil || got.Enabled {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := models.Update(ctx, m.ID, store.ModelMappingPatch{AnthropicModelID: store.Some("claude-sonnet-4-5")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("rename onto an alias = %v", err)
	}
	if _, err := models.Update(ctx, uuid.New(), store.ModelMappingPatch{Enabled: store.Some(true)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update unknown = %v", err)
	}

	if err := models.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if err := models.Delete(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if _, err := models.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get deleted = %v", err)
	}
}

// The control plane reloads on notifications from model and credential
// changes.
func TestConfigNotifications(t *testing.T) {
	ctx := testCtx(t)
	st := freshStore(t)
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+store.ConfigChannel); err != nil {
		t.Fatal(err)
	}
	m, err := st.Models().Resolve(ctx, "claude-haiku-4-5")
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.Users().Create(ctx, store.NewUser{Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	changes := []struct {
		table  string
		change func() error
	}{
		{"model_mappings", func() error {
			_, err := st.Models().Update(ctx, m.ID, store.ModelMappingPatch{Enabled: store.Some(false)})
			return err
		}},
		{"model_regions", func() error {
			_, err := st.Models().Update(ctx, m.ID, store.ModelMappingPatch{Regions: store.Some(map[string]string{"": "global.x"})})
			return err
		}},
		{"bedrock_credentials", func() error {
			_, err := st.Credentials().PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: "us-east-1"})
			return err
		}},
	}
	for _, c := range changes {
		t.Run(c.table, func(t *testing.T) {
			if err := c.change(); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for !seen[c.table] {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				n, err := conn.Conn().WaitForNotification(wctx)
				cancel()
				if err != nil {
					t.Fatalf("no notification for %s (saw %v): %v", c.table, seen, err)
				}
				if n.Channel != store.ConfigChannel {
					t.Fatalf("notification on %q", n.Channel)
				}
				seen[n.Payload] = true
			}
		})
	}
}
