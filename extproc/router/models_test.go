package router

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/usage"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

func TestModelsFuncIsReadPerRequest(t *testing.T) {
	r, _ := newBenchRouter(t, usage.Discard{})
	var current atomic.Value
	current.Store([]Model{{ID: "claude-a", CreatedAt: time.Unix(0, 0)}})
	r.modelsF = func() []Model { return current.Load().([]Model) }
	r.models = []Model{{ID: "static-ignored"}}

	ids := func() []string {
		resp := r.modelsResponse([]byte("/v1/models"), nil)
		var list struct {
			Data []struct{ ID string } `json:"data"`
		}
		if err := json.Unmarshal(resp.GetImmediateResponse().GetBody(), &list); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range list.Data {
			out = append(out, m.ID)
		}
		return out
	}
	if got := ids(); len(got) != 1 || got[0] != "claude-a" {
		t.Fatalf("models %v, want [claude-a]", got)
	}
	current.Store([]Model{{ID: "claude-b"}, {ID: "claude-c"}})
	if got := ids(); len(got) != 2 || got[0] != "claude-b" || got[1] != "claude-c" {
		t.Fatalf("after a configuration change, models %v", got)
	}
	current.Store([]Model(nil))
	if got := ids(); len(got) != 0 {
		t.Fatalf("no configuration yet: models %v", got)
	}
}

type swappableSource struct{ cfg *runtimeconfig.Config }

func (s *swappableSource) Current() *runtimeconfig.Config { return s.cfg }

func TestRuntimeModels(t *testing.T) {
	src := &swappableSource{}
	models := RuntimeModels(src)
	if got := models(); len(got) != 0 {
		t.Fatalf("before any configuration: %v", got)
	}
	cfg, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{Models: []*runtimev1.ModelMapping{
		{AnthropicModelId: "claude-sonnet-4-5-20250929", Family: "sonnet", BedrockModelId: "anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	src.cfg = cfg
	got := models()
	if len(got) != 2 || got[0].ID != "claude-sonnet-4-5-20250929" || got[0].DisplayName != "Claude Sonnet 4.5" ||
		!got[0].CreatedAt.Equal(time.Date(2025, 9, 29, 0, 0, 0, 0, time.UTC)) ||
		got[1].ID != "claude-opus-5-5" || !got[1].CreatedAt.Equal(time.Unix(0, 0)) {
		t.Fatalf("models = %+v", got)
	}
	if again := models(); &again[0] != &got[0] {
		t.Error("the list is rebuilt for an unchanged configuration")
	}
}

func TestModelCreatedAt(t *testing.T) {
	for id, want := range map[string]time.Time{
		"claude-3-5-haiku-20241022": time.Date(2024, 10, 22, 0, 0, 0, 0, time.UTC),
		"claude-opus-4-6":           time.Unix(0, 0),
		"claude-x-20251399":         time.Unix(0, 0), // not a date
		"20250101":                  time.Unix(0, 0),
	} {
		if got := modelCreatedAt(id); !got.Equal(want) {
			t.Errorf("modelCreatedAt(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestDisplayName(t *testing.T) {
	for in, want := range map[string]string{
		"claude-sonnet-4-5-20250929": "Claude Sonnet 4.5",
		"claude-opus-5-5":            "Claude Opus 5.5",
		"claude-3-5-haiku-20241022":  "Claude 3.5 Haiku",
		"claude-opus-4-6":            "Claude Opus 4.6",
		"claude-haiku-4":             "Claude Haiku 4",
	} {
		if got := displayName(in); got != want {
			t.Errorf("displayName(%q) = %q, want %q", in, got, want)
		}
	}
}
