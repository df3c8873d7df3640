package router

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/usage"
)

func TestModelsFuncIsReadPerRequest(t *testing.T) {
	r, _ := newBenchRouter(t, usage.Discard{})
	var current atomic.Value
	current.Store([]Model{{ID: "claude-a", CreatedAt: time.Unix(0, 0)}})
	r.modelsF = func() []Model { return current.Load().([]Model) }
	r.models = []Model{{ID: "static-ignored"}}

	ids := func() []string {
		resp := r.modelsResponse([]byte("/v1/models"))
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
