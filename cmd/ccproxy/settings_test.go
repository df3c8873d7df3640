package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/internal/config"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md's settings tables")

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// commandGroups lists the settings every command under root binds, in the
// order of the command tree.
func commandGroups(t *testing.T, root *cobra.Command) []config.CommandGroups {
	t.Helper()
	var out []config.CommandGroups
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		groups, err := config.BoundGroups(c.Flags())
		if err != nil {
			t.Fatal(err)
		}
		if len(groups) > 0 {
			out = append(out, config.CommandGroups{Command: c.CommandPath(), Groups: groups})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return out
}

// TestConfigurationDocsUpToDate keeps docs/configuration.md's tables
// identical to the settings the commands bind. Run with -update to rewrite
// them.
func TestConfigurationDocsUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- settings:begin (generated from the commands' settings: go test ./cmd/ccproxy -run TestConfigurationDocsUpToDate -update) -->\n", "<!-- settings:end -->"
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the settings markers", path)
	}
	want, err := config.Markdown(commandGroups(t, newRootCommand(nil)))
	if err != nil {
		t.Fatal(err)
	}
	got := doc[i+len(begin) : j]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is out of date; run: go test ./cmd/ccproxy -run TestConfigurationDocsUpToDate -update", path)
}

func TestBedrockURLAndDevResolve(t *testing.T) {
	load := func(t *testing.T, e map[string]string) (*devSettings, error) {
		t.Helper()
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		s := &devSettings{}
		return s, config.Bind(fs, s.DataPlane.group(), s.devGroup()).WithLookup(env(e)).Load()
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := load(t, map[string]string{})
		if err != nil {
			t.Fatal(err)
		}
		if c.DataPlane.BedrockURL != "https://bedrock-runtime.{region}.amazonaws.com" || c.Resolve != nil || c.UpstreamFailure != "local-reply" {
			t.Errorf("BedrockURL = %q, DevResolve = %v, UpstreamFailure = %q", c.DataPlane.BedrockURL, c.Resolve, c.UpstreamFailure)
		}
		if c.DataPlane.UpstreamMessageTimeout != controlplane.DefaultUpstreamExtProcMessageTimeout {
			t.Errorf("UpstreamMessageTimeout = %v", c.DataPlane.UpstreamMessageTimeout)
		}
	})
	t.Run("values", func(t *testing.T) {
		c, err := load(t, map[string]string{
			"CCPROXY_BEDROCK_URL":               "http://127.0.0.1:18082/",
			"CCPROXY_DEV_RESOLVE":               "Bedrock-Runtime.us-east-1.amazonaws.com:443=127.0.0.1:18443, api.anthropic.com:443=[::1]:9443, gone.test:443=NXDOMAIN",
			"CCPROXY_ENVOYSIM_UPSTREAM_FAILURE": "stall",
			"CCPROXY_UPSTREAM_MESSAGE_TIMEOUT":  "2500ms",
		})
		if err != nil {
			t.Fatal(err)
		}
		if c.DataPlane.UpstreamMessageTimeout != 2500*time.Millisecond {
			t.Errorf("UpstreamMessageTimeout = %v, want 2.5s", c.DataPlane.UpstreamMessageTimeout)
		}
		opts := controlPlaneOptions(c.DataPlane, "unix:///x.sock")
		if opts.UpstreamExtProcMessageTimeout != 2500*time.Millisecond {
			t.Errorf("control plane UpstreamExtProcMessageTimeout = %v, want 2.5s", opts.UpstreamExtProcMessageTimeout)
		}
		if c.DataPlane.BedrockURL != "http://127.0.0.1:18082" {
			t.Errorf("BedrockURL = %q", c.DataPlane.BedrockURL)
		}
		if c.UpstreamFailure != "stall" {
			t.Errorf("UpstreamFailure = %q, want stall", c.UpstreamFailure)
		}
		want := map[string]string{
			"bedrock-runtime.us-east-1.amazonaws.com:443": "127.0.0.1:18443",
			"api.anthropic.com:443":                       "[::1]:9443",
			"gone.test:443":                               "",
		}
		if len(c.Resolve) != len(want) {
			t.Fatalf("DevResolve = %v, want %v", c.Resolve, want)
		}
		for k, v := range want {
			if c.Resolve[k] != v {
				t.Errorf("DevResolve[%s] = %q, want %q", k, c.Resolve[k], v)
			}
		}
	})
	for _, tc := range []struct{ name, env, value, want string }{
		{"bedrock scheme", "CCPROXY_BEDROCK_URL", "ftp://bedrock.example.com", "must be http(s)://host[:port]"},
		{"bedrock path", "CCPROXY_BEDROCK_URL", "https://bedrock-runtime.{region}.amazonaws.com/x", "without a path"},
		{"bedrock userinfo", "CCPROXY_BEDROCK_URL", "https://u@bedrock.example.com", "without a path"},
		{"bedrock placeholder in path", "CCPROXY_BEDROCK_URL", "https://bedrock.example.com/{region}", "without a path"},
		{"bedrock other placeholder", "CCPROXY_BEDROCK_URL", "https://{zone}.example.com", "must be http(s)"},
		{"resolve without =", "CCPROXY_DEV_RESOLVE", "api.anthropic.com:443", "want host:port=ip:port"},
		{"resolve without port", "CCPROXY_DEV_RESOLVE", "api.anthropic.com=127.0.0.1:1", "is not host:port"},
		{"resolve bad port", "CCPROXY_DEV_RESOLVE", "api.anthropic.com:0=127.0.0.1:1", "is not host:port"},
		{"resolve host name target", "CCPROXY_DEV_RESOLVE", "api.anthropic.com:443=localhost:1", "is not an IP address"},
		{"resolve target port", "CCPROXY_DEV_RESOLVE", "api.anthropic.com:443=127.0.0.1:99999", "is not ip:port"},
		{"resolve duplicate", "CCPROXY_DEV_RESOLVE", "a.test:443=127.0.0.1:1,A.test:443=127.0.0.1:2", "a.test:443 is given twice"},
		{"resolve empty entry", "CCPROXY_DEV_RESOLVE", "a.test:443=127.0.0.1:1,", "want host:port=ip:port"},
		{"resolve duplicate nxdomain", "CCPROXY_DEV_RESOLVE", "a.test:443=nxdomain,a.test:443=127.0.0.1:1", "a.test:443 is given twice"},
		{"upstream failure rule", "CCPROXY_ENVOYSIM_UPSTREAM_FAILURE", "ignore", "must be local-reply or stall"},
		{"upstream message timeout too short", "CCPROXY_UPSTREAM_MESSAGE_TIMEOUT", "500ms", "from 1s to 2m"},
		{"upstream message timeout too long", "CCPROXY_UPSTREAM_MESSAGE_TIMEOUT", "3m", "from 1s to 2m"},
		{"upstream message timeout sub-millisecond", "CCPROXY_UPSTREAM_MESSAGE_TIMEOUT", "1.0001s", "whole milliseconds"},
		{"upstream message timeout not a duration", "CCPROXY_UPSTREAM_MESSAGE_TIMEOUT", "ten", "e.g. 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, map[string]string{tc.env: tc.value})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestUsageRetentionAndEMF(t *testing.T) {
	load := func(e map[string]string) (*adminServiceSettings, error) {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		c := &adminServiceSettings{}
		return c, config.Bind(fs, c.group()).WithLookup(env(e)).Load()
	}
	c, err := load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.UsageRetentionMonths != 0 || c.CloudWatchEMF != "off" {
		t.Errorf("defaults: retention %d, emf %q", c.UsageRetentionMonths, c.CloudWatchEMF)
	}
	for _, v := range []string{"0", " 0 ", ""} {
		if c, err := load(map[string]string{"CCPROXY_USAGE_RETENTION": v}); err != nil || c.UsageRetentionMonths != 0 {
			t.Errorf("retention %q: %d, %v", v, c.UsageRetentionMonths, err)
		}
	}
	c, err = load(map[string]string{"CCPROXY_USAGE_RETENTION": "13", "CCPROXY_CLOUDWATCH_EMF": "stdout"})
	if err != nil || c.UsageRetentionMonths != 13 || c.CloudWatchEMF != "stdout" {
		t.Errorf("got %d %q, %v", c.UsageRetentionMonths, c.CloudWatchEMF, err)
	}
	for _, tc := range []struct{ env, value, want string }{
		{"CCPROXY_USAGE_RETENTION", "-1", "must be a whole number of months"},
		{"CCPROXY_USAGE_RETENTION", "13mo", "must be a whole number of months"},
		{"CCPROXY_USAGE_RETENTION", "720h", "must be a whole number of months"},
		{"CCPROXY_USAGE_RETENTION", "1201", "must be a whole number of months"},
		{"CCPROXY_CLOUDWATCH_EMF", "cloudwatch", "must be off or stdout"},
	} {
		if _, err := load(map[string]string{tc.env: tc.value}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: err = %v, want %q", tc.env, tc.value, err, tc.want)
		}
	}
}
