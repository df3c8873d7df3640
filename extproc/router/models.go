package router

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
)

// RuntimeModels returns a Config.ModelsFunc that answers GET /v1/models
// from the runtime configuration in force: its model mappings in the
// control plane's order (empty until the first configuration arrives). The
// list is built once per configuration.
func RuntimeModels(src runtimeconfig.Source) func() []Model {
	type cached struct {
		cfg    *runtimeconfig.Config
		models []Model
	}
	var last atomic.Pointer[cached]
	return func() []Model {
		cfg := src.Current()
		if cfg == nil {
			return nil
		}
		if c := last.Load(); c != nil && c.cfg == cfg {
			return c.models
		}
		infos := cfg.Models()
		models := make([]Model, 0, len(infos))
		for _, m := range infos {
			models = append(models, Model{ID: m.AnthropicID, DisplayName: displayName(m.AnthropicID), CreatedAt: modelCreatedAt(m.AnthropicID)})
		}
		last.Store(&cached{cfg, models})
		return models
	}
}

// modelCreatedAt is a model's created_at in GET /v1/models: the date its id
// ends with (claude-sonnet-4-5-20250929 → 2025-09-29, as Anthropic's API
// answers), or the Unix epoch for dateless ids. The runtime configuration
// carries no creation time.
func modelCreatedAt(id string) time.Time {
	if i := strings.LastIndexByte(id, '-'); i >= 0 && len(id)-i-1 == 8 && isDigits(id[i+1:]) {
		if t, err := time.Parse("20060102", id[i+1:]); err == nil {
			return t
		}
	}
	return time.Unix(0, 0).UTC()
}

// displayName turns claude-sonnet-4-5-20250929 into "Claude Sonnet 4.5":
// words capitalised, adjacent version numbers joined with dots, the date
// suffix dropped.
func displayName(id string) string {
	parts := strings.Split(id, "-")
	if n := len(parts); n > 1 && len(parts[n-1]) == 8 && isDigits(parts[n-1]) {
		parts = parts[:n-1]
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case i == 0:
		case isDigits(p) && isDigits(parts[i-1]):
			b.WriteByte('.')
		default:
			b.WriteByte(' ')
		}
		if p != "" && p[0] >= 'a' && p[0] <= 'z' {
			p = string(p[0]-'a'+'A') + p[1:]
		}
		b.WriteString(p)
	}
	return b.String()
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
