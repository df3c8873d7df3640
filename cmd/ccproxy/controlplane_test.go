package main

import (
	"testing"

	"github.com/ccproxy/ccproxy/controlplane"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// TestProfileRuleReachesExtProc: CCPROXY_BEDROCK_PROFILE_RULE ends up in the
// runtime configuration the control plane serves to extproc.
func TestProfileRuleReachesExtProc(t *testing.T) {
	for _, on := range []bool{false, true} {
		opts := controlPlaneOptions(dataPlaneSettings{
			ListenAddr:   "127.0.0.1:8080",
			AnthropicURL: "https://api.anthropic.com", UpstreamCAFile: "/etc/ssl/certs/ca-certificates.crt",
			BedrockURL: controlplane.DefaultBedrockURL, BedrockProfileRule: on,
		}, "unix:///run/ccproxy/extproc.sock")
		res, err := controlplane.BuildResources(opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.ExtensionConfigs) != 1 {
			t.Fatalf("%d extension configs", len(res.ExtensionConfigs))
		}
		var cfg runtimev1.BedrockConfig
		if err := res.ExtensionConfigs[0].GetTypedConfig().UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.GetProfileRuleFallback() != on {
			t.Fatalf("profile rule %v: served %v", on, cfg.GetProfileRuleFallback())
		}
	}
}
