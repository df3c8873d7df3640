package runtimeconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

const (
	sonnetID     = "claude-sonnet-4-5-20250929"
	sonnetBase   = "anthropic.claude-sonnet-4-5-20250929-v1:0"
	sonnetUS     = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
	sonnetGlobal = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
	opusID       = "claude-opus-5-5"
	opusBase     = "anthropic.claude-opus-5-5"
	opus41ID     = "claude-opus-4-1-20250805"
	opus41Base   = "anthropic.claude-opus-4-1-20250805-v1:0"
	opus41US     = "us.anthropic.claude-opus-4-1-20250805-v1:0"
)

func sonnetRow() *runtimev1.ModelMapping {
	return &runtimev1.ModelMapping{
		AnthropicModelId: sonnetID,
		Aliases:          []string{"claude-sonnet-4-5"},
		Family:           "sonnet",
		BedrockModelId:   sonnetBase,
		RegionModelIds:   map[string]string{"us-east-1": sonnetUS, "": sonnetGlobal},
	}
}

func opusRow() *runtimev1.ModelMapping {
	return &runtimev1.ModelMapping{
		AnthropicModelId: opusID,
		Family:           "opus",
		BedrockModelId:   opusBase,
		RegionModelIds:   map[string]string{"": "global.anthropic.claude-opus-5-5", "us-east-1": "us.anthropic.claude-opus-5-5"},
	}
}

// opus41Row has a us profile only: no "" entry.
func opus41Row() *runtimev1.ModelMapping {
	return &runtimev1.ModelMapping{
		AnthropicModelId: opus41ID,
		Aliases:          []string{"claude-opus-4-1"},
		Family:           "opus",
		BedrockModelId:   opus41Base,
		RegionModelIds:   map[string]string{"us-east-1": opus41US, "us-west-2": opus41US},
	}
}

func testProto(fallback bool) *runtimev1.BedrockConfig {
	return &runtimev1.BedrockConfig{
		Models:              []*runtimev1.ModelMapping{sonnetRow(), opusRow(), opus41Row()},
		Regions:             []string{"eu-west-1", "us-east-1"},
		ProfileRuleFallback: fallback,
	}
}

func mustConfig(t testing.TB, pb *runtimev1.BedrockConfig) *Config {
	t.Helper()
	c, err := FromProto(pb)
	if err != nil {
		t.Fatalf("FromProto: %v", err)
	}
	return c
}

func TestResolveModel(t *testing.T) {
	strict := mustConfig(t, testProto(false))
	loose := mustConfig(t, testProto(true))

	type want struct {
		m   Model
		err bool
	}
	ok := func(anthropic, invoke, base string) want {
		return want{m: Model{AnthropicID: anthropic, InvokeID: invoke, BaseID: base}}
	}
	guess := func(name, geo string) want {
		return want{m: Model{AnthropicID: name, InvokeID: geo + ".anthropic." + name, BaseID: "anthropic." + name, Guessed: true}}
	}
	fail := want{err: true}

	tests := []struct {
		name          string
		model, region string
		strict, loose want
	}{
		{"id, region entry", sonnetID, "us-east-1", ok(sonnetID, sonnetUS, sonnetBase), ok(sonnetID, sonnetUS, sonnetBase)},
		{"id, default entry", sonnetID, "eu-west-1", ok(sonnetID, sonnetGlobal, sonnetBase), ok(sonnetID, sonnetGlobal, sonnetBase)},
		{"alias, region entry", "claude-sonnet-4-5", "us-east-1", ok(sonnetID, sonnetUS, sonnetBase), ok(sonnetID, sonnetUS, sonnetBase)},
		{"alias, default entry", "claude-sonnet-4-5", "ap-northeast-1", ok(sonnetID, sonnetGlobal, sonnetBase), ok(sonnetID, sonnetGlobal, sonnetBase)},
		{"empty region uses default entry", sonnetID, "", ok(sonnetID, sonnetGlobal, sonnetBase), ok(sonnetID, sonnetGlobal, sonnetBase)},
		{"opus 5.5 us", opusID, "us-east-1", ok(opusID, "us.anthropic.claude-opus-5-5", opusBase), ok(opusID, "us.anthropic.claude-opus-5-5", opusBase)},
		{"opus 5.5 global", opusID, "eu-west-1", ok(opusID, "global.anthropic.claude-opus-5-5", opusBase), ok(opusID, "global.anthropic.claude-opus-5-5", opusBase)},
		{"1m suffix", "claude-opus-5-5[1m]", "us-east-1", ok(opusID, "us.anthropic.claude-opus-5-5", opusBase), ok(opusID, "us.anthropic.claude-opus-5-5", opusBase)},
		{"repeated suffix on alias", "claude-sonnet-4-5[1M][1m]", "eu-west-1", ok(sonnetID, sonnetGlobal, sonnetBase), ok(sonnetID, sonnetGlobal, sonnetBase)},
		{"mapped, region entry", opus41ID, "us-west-2", ok(opus41ID, opus41US, opus41Base), ok(opus41ID, opus41US, opus41Base)},
		// A mapping that covers neither the region nor "" is never guessed.
		{"mapped, no entry for region", opus41ID, "eu-west-1", fail, fail},
		{"mapped alias, no entry for region", "claude-opus-4-1", "eu-west-1", fail, fail},
		{"matching is exact", "Claude-Sonnet-4-5", "us-east-1", fail, fail},
		{"unmapped claude", "claude-haiku-9", "us-east-1", fail, guess("claude-haiku-9", "us")},
		{"unmapped claude with suffix", "claude-haiku-9[1m]", "eu-west-1", fail, guess("claude-haiku-9", "eu")},
		{"unmapped dotted", "claude-3.7-x", "us-east-1", fail, guess("claude-3.7-x", "us")},
		{"geo ca", "claude-x-1", "ca-central-1", fail, guess("claude-x-1", "us")},
		{"geo us-west-2", "claude-x-1", "us-west-2", fail, guess("claude-x-1", "us")},
		{"geo eu", "claude-x-1", "eu-central-2", fail, guess("claude-x-1", "eu")},
		{"geo jp 1", "claude-x-1", "ap-northeast-1", fail, guess("claude-x-1", "jp")},
		{"geo jp 3", "claude-x-1", "ap-northeast-3", fail, guess("claude-x-1", "jp")},
		{"geo apac northeast-2", "claude-x-1", "ap-northeast-2", fail, guess("claude-x-1", "apac")},
		{"geo au 2", "claude-x-1", "ap-southeast-2", fail, guess("claude-x-1", "au")},
		{"geo au 4", "claude-x-1", "ap-southeast-4", fail, guess("claude-x-1", "au")},
		{"geo apac south", "claude-x-1", "ap-south-1", fail, guess("claude-x-1", "apac")},
		{"geo apac southeast-1", "claude-x-1", "ap-southeast-1", fail, guess("claude-x-1", "apac")},
		{"geo global sa", "claude-x-1", "sa-east-1", fail, guess("claude-x-1", "global")},
		{"geo global me", "claude-x-1", "me-central-1", fail, guess("claude-x-1", "global")},
		{"geo global empty region", "claude-x-1", "", fail, guess("claude-x-1", "global")},
		{"geo govcloud", "claude-x-1", "us-gov-west-1", fail, guess("claude-x-1", "us-gov")},
		{"not claude", "gpt-4o", "us-east-1", fail, fail},
		{"uppercase", "claude-Opus-9", "us-east-1", fail, fail},
		{"underscore", "claude-opus_9", "us-east-1", fail, fail},
		{"colon", "claude-opus-9:0", "us-east-1", fail, fail},
		{"bare prefix", "claude-", "us-east-1", fail, fail},
		{"empty", "", "us-east-1", fail, fail},
		{"suffix only", "[1m]", "us-east-1", fail, fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				label string
				cfg   *Config
				want  want
			}{{"strict", strict, tt.strict}, {"fallback", loose, tt.loose}} {
				got, err := c.cfg.ResolveModel(tt.model, tt.region)
				if c.want.err {
					if err == nil {
						t.Fatalf("%s: ResolveModel(%q, %q) = %+v, want error", c.label, tt.model, tt.region, got)
					}
					if !errors.Is(err, ErrUnmappable) {
						t.Errorf("%s: error %v does not match ErrUnmappable", c.label, err)
					}
					var ue *UnmappableError
					if !errors.As(err, &ue) || ue.Model != tt.model || ue.Region != tt.region {
						t.Errorf("%s: error %#v does not name model %q and region %q", c.label, err, tt.model, tt.region)
					}
					if !strings.Contains(err.Error(), `"`+tt.model+`"`) || !strings.Contains(err.Error(), `"`+tt.region+`"`) {
						t.Errorf("%s: error text %q does not name the model and region", c.label, err)
					}
					if got != (Model{}) {
						t.Errorf("%s: got %+v with error, want zero Model", c.label, got)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: ResolveModel(%q, %q): %v", c.label, tt.model, tt.region, err)
				}
				if got != c.want.m {
					t.Errorf("%s: ResolveModel(%q, %q)\n got %+v\nwant %+v", c.label, tt.model, tt.region, got, c.want.m)
				}
			}
		})
	}
}

func TestUnmappableErrorText(t *testing.T) {
	c := mustConfig(t, testProto(false))
	_, err := c.ResolveModel("claude-opus-4-1", "eu-west-1")
	want := `model "claude-opus-4-1" is not available on Bedrock from region "eu-west-1": ` +
		`the model mapping has no inference profile for the region and no default`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	_, err = c.ResolveModel("claude-haiku-9", "us-east-1")
	want = `model "claude-haiku-9" is not available on Bedrock from region "us-east-1": no model mapping`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestFromProtoAccessors(t *testing.T) {
	c := mustConfig(t, testProto(true))
	if c.Version() != "" {
		t.Errorf("Version() = %q, want empty", c.Version())
	}
	if (*Config)(nil).Version() != "" {
		t.Error("nil Config has a version")
	}
	for region, want := range map[string]bool{"us-east-1": true, "eu-west-1": true, "us-west-2": false, "": false} {
		if got := c.HasRegion(region); got != want {
			t.Errorf("HasRegion(%q) = %v, want %v", region, got, want)
		}
	}
	if got, want := c.Regions(), []string{"eu-west-1", "us-east-1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Regions() = %v, want %v", got, want)
	}
	if !c.ProfileRuleFallback() {
		t.Error("ProfileRuleFallback() = false")
	}
	beta, field := c.Translator.Versions()
	if wb, wf := bedrockpolicy.DefaultBetaTable().Version, bedrockpolicy.DefaultFieldTable().Version; beta != wb || field != wf {
		t.Errorf("empty tables: Versions() = %q, %q; want defaults %q, %q", beta, field, wb, wf)
	}
}

func TestModels(t *testing.T) {
	c := mustConfig(t, testProto(false))
	want := []ModelInfo{
		{AnthropicID: sonnetID, Aliases: []string{"claude-sonnet-4-5"}, Family: "sonnet", BaseID: sonnetBase,
			InvokeIDs: map[string]string{"us-east-1": sonnetUS, "": sonnetGlobal}},
		{AnthropicID: opusID, Family: "opus", BaseID: opusBase,
			InvokeIDs: map[string]string{"": "global.anthropic.claude-opus-5-5", "us-east-1": "us.anthropic.claude-opus-5-5"}},
		{AnthropicID: opus41ID, Aliases: []string{"claude-opus-4-1"}, Family: "opus", BaseID: opus41Base,
			InvokeIDs: map[string]string{"us-east-1": opus41US, "us-west-2": opus41US}},
	}
	got := c.Models()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Models()\n got %+v\nwant %+v", got, want)
	}
	// The result is a copy: changing it changes nothing in the Config.
	got[0].Aliases[0] = "x"
	got[0].InvokeIDs["us-east-1"] = "x"
	got[1].AnthropicID = "x"
	if again := c.Models(); !reflect.DeepEqual(again, want) {
		t.Fatalf("Models() after mutating a previous result\n got %+v\nwant %+v", again, want)
	}
	if m, err := c.ResolveModel("claude-sonnet-4-5", "us-east-1"); err != nil || m.InvokeID != sonnetUS {
		t.Fatalf("ResolveModel after mutation = %+v, %v", m, err)
	}
}

// TestFromProtoCopies checks that the Config does not alias the proto.
func TestFromProtoCopies(t *testing.T) {
	pb := testProto(false)
	c := mustConfig(t, pb)
	pb.Models[0].RegionModelIds["us-east-1"] = "changed"
	pb.Models[0].Aliases[0] = "changed"
	pb.Regions[0] = "changed"
	if m, err := c.ResolveModel("claude-sonnet-4-5", "us-east-1"); err != nil || m.InvokeID != sonnetUS {
		t.Fatalf("ResolveModel after mutating the proto = %+v, %v", m, err)
	}
	if !c.HasRegion("eu-west-1") {
		t.Fatal("region lost after mutating the proto")
	}
}

func TestFromProtoTables(t *testing.T) {
	pb := testProto(false)
	pb.Betas = &runtimev1.BetaTable{Version: "b1", Rules: []*runtimev1.BetaRule{
		{Anthropic: "keep-me", Action: runtimev1.BetaRule_ACTION_KEEP},
		{Anthropic: "rename-me", Action: runtimev1.BetaRule_ACTION_RENAME, Bedrock: "renamed"},
		{Anthropic: "drop-me", Action: runtimev1.BetaRule_ACTION_DROP},
	}}
	pb.Fields = &runtimev1.FieldTable{Version: "f1", TopLevel: []string{"messages", "max_tokens"}, Message: []string{"role", "content"}}
	c := mustConfig(t, pb)
	if beta, field := c.Translator.Versions(); beta != "b1" || field != "f1" {
		t.Fatalf("Versions() = %q, %q; want b1, f1", beta, field)
	}
	body := `{"model":"claude-opus-5-5","max_tokens":5,"system":"s","messages":[{"role":"user","content":"hi","extra":1}],"stream":true}`
	req, err := c.Translator.TranslateRequest([]byte(body), "drop-me, rename-me,unknown,keep-me", true, "us.anthropic.claude-opus-5-5")
	if err != nil {
		t.Fatal(err)
	}
	wantBody := `{"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"anthropic_beta":["keep-me","renamed"],"anthropic_version":"bedrock-2023-05-31"}`
	if string(req.Body) != wantBody {
		t.Errorf("body\n got %s\nwant %s", req.Body, wantBody)
	}
	if want := []string{"drop-me", "unknown"}; !reflect.DeepEqual(req.DroppedBetas, want) {
		t.Errorf("DroppedBetas = %v, want %v", req.DroppedBetas, want)
	}
	if want := []string{"system", "messages[].extra"}; !reflect.DeepEqual(req.DroppedFields, want) {
		t.Errorf("DroppedFields = %v, want %v", req.DroppedFields, want)
	}

	// Tables present but empty mean the defaults.
	pb.Betas = &runtimev1.BetaTable{Version: "ignored"}
	pb.Fields = &runtimev1.FieldTable{Version: "ignored"}
	c = mustConfig(t, pb)
	beta, field := c.Translator.Versions()
	if beta != bedrockpolicy.DefaultBetaTable().Version || field != bedrockpolicy.DefaultFieldTable().Version {
		t.Errorf("empty tables: Versions() = %q, %q; want the defaults", beta, field)
	}
}

func TestFromProtoInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*runtimev1.BedrockConfig)
		want   string // substring of the error
	}{
		{"empty id", func(pb *runtimev1.BedrockConfig) { pb.Models[1].AnthropicModelId = "" }, "models[1]: empty anthropic_model_id"},
		{"empty alias", func(pb *runtimev1.BedrockConfig) { pb.Models[0].Aliases = append(pb.Models[0].Aliases, "") }, "empty alias"},
		{"empty base id", func(pb *runtimev1.BedrockConfig) { pb.Models[0].BedrockModelId = "" }, "empty bedrock_model_id"},
		{"duplicate id", func(pb *runtimev1.BedrockConfig) { pb.Models = append(pb.Models, opusRow()) }, `"claude-opus-5-5" is already used by model "claude-opus-5-5"`},
		{"alias is another id", func(pb *runtimev1.BedrockConfig) { pb.Models[1].Aliases = []string{sonnetID} }, `name "claude-sonnet-4-5-20250929" is already used by model "claude-sonnet-4-5-20250929"`},
		{"id is another alias", func(pb *runtimev1.BedrockConfig) { pb.Models[1].AnthropicModelId = "claude-sonnet-4-5" }, `name "claude-sonnet-4-5" is already used`},
		{"alias twice across models", func(pb *runtimev1.BedrockConfig) { pb.Models[1].Aliases = []string{"claude-opus-4-1"} }, `name "claude-opus-4-1" is already used by model "claude-opus-5-5"`},
		{"alias twice in a model", func(pb *runtimev1.BedrockConfig) { pb.Models[0].Aliases = []string{"a", "a"} }, `name "a" listed twice`},
		{"alias is own id", func(pb *runtimev1.BedrockConfig) { pb.Models[0].Aliases = []string{sonnetID} }, "listed twice"},
		{"region uppercase", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "US-EAST-1") }, `invalid region "US-EAST-1"`},
		{"region no number", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "us-east-") }, "invalid region"},
		{"region one part", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "useast1") }, "invalid region"},
		{"region two parts", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "us-1") }, "invalid region"},
		{"region empty", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "") }, `invalid region ""`},
		{"region empty part", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "us--1") }, "invalid region"},
		{"region long prefix", func(pb *runtimev1.BedrockConfig) { pb.Regions = append(pb.Regions, "usa-east-1") }, "invalid region"},
		{"region key", func(pb *runtimev1.BedrockConfig) { pb.Models[0].RegionModelIds["global"] = "x" }, `region_model_ids: invalid region "global"`},
		{"empty invoke id", func(pb *runtimev1.BedrockConfig) { pb.Models[0].RegionModelIds["eu-west-1"] = "" }, `region_model_ids["eu-west-1"]: empty model id`},
		{"empty flag", func(pb *runtimev1.BedrockConfig) {
			pb.Betas = &runtimev1.BetaTable{Rules: []*runtimev1.BetaRule{{Action: runtimev1.BetaRule_ACTION_KEEP}}}
		}, "betas.rules[0]: empty anthropic flag"},
		{"duplicate flag", func(pb *runtimev1.BedrockConfig) {
			pb.Betas = &runtimev1.BetaTable{Rules: []*runtimev1.BetaRule{
				{Anthropic: "f", Action: runtimev1.BetaRule_ACTION_KEEP}, {Anthropic: "f", Action: runtimev1.BetaRule_ACTION_DROP}}}
		}, `flag "f" listed twice`},
		{"rename without target", func(pb *runtimev1.BedrockConfig) {
			pb.Betas = &runtimev1.BetaTable{Rules: []*runtimev1.BetaRule{{Anthropic: "f", Action: runtimev1.BetaRule_ACTION_RENAME}}}
		}, "rename without a Bedrock name"},
		{"unknown action", func(pb *runtimev1.BedrockConfig) {
			pb.Betas = &runtimev1.BetaTable{Rules: []*runtimev1.BetaRule{{Anthropic: "f", Action: 7}}}
		}, "unknown action 7"},
		{"fields top level only", func(pb *runtimev1.BedrockConfig) {
			pb.Fields = &runtimev1.FieldTable{TopLevel: []string{"messages"}}
		}, "message is empty"},
		{"fields message only", func(pb *runtimev1.BedrockConfig) {
			pb.Fields = &runtimev1.FieldTable{Message: []string{"role"}}
		}, "top_level is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pb := testProto(true)
			tt.mutate(pb)
			c, err := FromProto(pb)
			if err == nil {
				t.Fatalf("FromProto succeeded, want error containing %q", tt.want)
			}
			if c != nil {
				t.Error("FromProto returned a Config with its error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if _, err := FromProto(nil); err == nil {
		t.Error("FromProto(nil) succeeded")
	}
}

func TestFromProtoEmpty(t *testing.T) {
	c := mustConfig(t, &runtimev1.BedrockConfig{})
	if len(c.Models()) != 0 || len(c.Regions()) != 0 || c.Translator == nil {
		t.Fatalf("empty config: models %v regions %v translator %v", c.Models(), c.Regions(), c.Translator)
	}
	if _, err := c.ResolveModel(sonnetID, "us-east-1"); !errors.Is(err, ErrUnmappable) {
		t.Fatalf("ResolveModel on an empty table: %v", err)
	}
}

func TestStripContextSuffix(t *testing.T) {
	for in, want := range map[string]string{
		"claude-opus-4-6[1m]":       "claude-opus-4-6",
		"claude-opus-4-6[1M]":       "claude-opus-4-6",
		"claude-opus-4-6[1M][1m]":   "claude-opus-4-6",
		"claude-opus-4-6":           "claude-opus-4-6",
		"claude-opus-4-6[]":         "claude-opus-4-6[]",
		"claude-opus-4-6[1m]x":      "claude-opus-4-6[1m]x",
		"claude-opus-4-6]":          "claude-opus-4-6]",
		"claude-opus-4-6[a]]":       "claude-opus-4-6[a]]",
		"claude-opus-4-6[[1m]":      "claude-opus-4-6[",
		"[1m]":                      "",
		"":                          "",
		"claude[1m]-opus":           "claude[1m]-opus",
		"us.anthropic.claude-x[1m]": "us.anthropic.claude-x",
	} {
		if got := StripContextSuffix(in); got != want {
			t.Errorf("StripContextSuffix(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzStripContextSuffix(f *testing.F) {
	for _, s := range []string{"claude-opus-4-6[1m]", "a[1M][1m]", "[]", "]", "[[a]]", "x[a]y[b]", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := StripContextSuffix(in)
		if !strings.HasPrefix(in, out) {
			t.Fatalf("StripContextSuffix(%q) = %q, not a prefix", in, out)
		}
		if again := StripContextSuffix(out); again != out {
			t.Fatalf("not idempotent: %q → %q → %q", in, out, again)
		}
		if !strings.Contains(in, "[") && out != in {
			t.Fatalf("StripContextSuffix(%q) = %q, changed a name without brackets", in, out)
		}
		// Whatever was removed is a run of non-empty bracket groups.
		rest := in[len(out):]
		for rest != "" {
			if rest[0] != '[' {
				t.Fatalf("StripContextSuffix(%q) removed %q", in, in[len(out):])
			}
			end := strings.IndexByte(rest, ']')
			if end < 2 || strings.ContainsAny(rest[1:end], "[") {
				t.Fatalf("StripContextSuffix(%q) removed %q", in, in[len(out):])
			}
			rest = rest[end+1:]
		}
		// A selector added to a stripped name comes off again.
		if got := StripContextSuffix(out + "[1m]"); got != out {
			t.Fatalf("StripContextSuffix(%q) = %q, want %q", out+"[1m]", got, out)
		}
	})
}

func BenchmarkResolveModel(b *testing.B) {
	c := mustConfig(b, testProto(true))
	for _, bm := range []struct{ name, model, region string }{
		{"alias", "claude-sonnet-4-5", "us-east-1"},
		{"suffix", "claude-opus-5-5[1m]", "eu-west-1"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.ResolveModel(bm.model, bm.region); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestAnthropicIDFor(t *testing.T) {
	c, err := FromProto(testProto(false))
	if err != nil {
		t.Fatal(err)
	}
	for bid, want := range map[string]string{
		sonnetBase:                        sonnetID,
		sonnetUS:                          sonnetID,
		sonnetGlobal:                      sonnetID,
		"us.anthropic.claude-opus-5-5":    opusID,
		opus41US:                          opus41ID,
		"anthropic.claude-imaginary-9-v1": "",
		"claude-sonnet-4-5-20250929":      "", // an Anthropic id is not a Bedrock id
	} {
		if got := c.AnthropicIDFor(bid); got != want {
			t.Errorf("AnthropicIDFor(%q) = %q, want %q", bid, got, want)
		}
	}
	for _, m := range c.Models() {
		if m.AnthropicID != sonnetID {
			continue
		}
		for region, want := range map[string]string{"us-east-1": sonnetUS, "eu-west-1": sonnetGlobal} {
			if got := m.InvokeIDFor(region); got != want {
				t.Errorf("InvokeIDFor(%q) = %q, want %q", region, got, want)
			}
		}
	}
}

func TestHasFallback(t *testing.T) {
	pb := testProto(false)
	pb.FallbackRegions = []string{"us-east-1"}
	c := mustConfig(t, pb)
	for region, want := range map[string]bool{"us-east-1": true, "eu-west-1": false, "us-west-2": false, "": false} {
		if got := c.HasFallback(region); got != want {
			t.Errorf("HasFallback(%q) = %v, want %v", region, got, want)
		}
	}
	if c := mustConfig(t, testProto(false)); c.HasFallback("us-east-1") {
		t.Error("HasFallback(us-east-1) = true without fallback_regions")
	}
	// A fallback route ends on the region's Bedrock cluster: a region
	// without one is inconsistent.
	pb.FallbackRegions = []string{"us-west-2"}
	if _, err := FromProto(pb); err == nil || !strings.Contains(err.Error(), `fallback_regions: "us-west-2" is not in regions`) {
		t.Fatalf("FromProto with a fallback region outside regions: err = %v", err)
	}
}
