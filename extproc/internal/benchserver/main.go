// Command benchserver runs the extproc server with an in-memory key store,
// for measuring it with shared/tools/extproc-bench (see
// extproc/testdata/bench/README.md). It is not a deployment entry point:
// `ccproxy extproc` is.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/usage"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

func main() {
	addr := flag.String("addr", "unix:///tmp/ccproxy-extproc-bench.sock", "listen address: unix:///path or host:port")
	key := flag.String("key", "ak_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "the access key of a plan_first user")
	bedrockKey := flag.String("bedrock-key", "ak_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8", "the access key of a bedrock_only user (SigV4, us-east-1)")
	logUsage := flag.Bool("log-usage", false, "log every usage event (costs CPU)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "benchserver:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(*addr, *key, *bedrockKey, *logUsage); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(addr, key, bedrockKey string, logUsage bool) error {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hasher, err := keys.NewHasher([]byte(strings.Repeat("b", keys.MinSecretLen)))
	if err != nil {
		return err
	}
	for _, k := range []string{key, bedrockKey} {
		if _, err := keys.Parse(k); err != nil {
			return err
		}
	}
	store := accesskey.MemoryStore{}
	store.Add(hasher, key, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(key)})
	// The Bedrock user signs with SigV4 (static credentials standing in for
	// the ambient chain): the costlier of the two credential kinds.
	store.Add(hasher, bedrockKey, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(bedrockKey),
		RoutingStrategy: accesskey.RoutingBedrockOnly,
		Credential:      &accesskey.BedrockCredential{ID: uuid.New(), Kind: bedrockauth.KindAWSDefaultChain, Region: "us-east-1"}})
	runtime, err := runtimeconfig.FromProto(&runtimev1.BedrockConfig{
		Models: []*runtimev1.ModelMapping{{
			AnthropicModelId: "claude-opus-5-5", Family: "opus", BedrockModelId: "anthropic.claude-opus-5-5",
			RegionModelIds: map[string]string{"": "global.anthropic.claude-opus-5-5", "us-east-1": "us.anthropic.claude-opus-5-5"},
		}},
		Regions: []string{"us-east-1"},
	})
	if err != nil {
		return err
	}
	signer := bedrockauth.New(bedrockauth.Config{
		AWSCredentials: credentials.NewStaticCredentialsProvider("AKIDBENCHMARK", "bench-secret-access-key", ""),
	})
	var sink usage.Sink = usage.Discard{}
	if logUsage {
		sink = usage.LogSink{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	}
	srv, err := extproc.NewServer(extproc.Options{
		Logger: logger,
		Keys:   accesskey.NewCache(accesskey.NewStoreResolver(store, hasher, nil), hasher, accesskey.CacheConfig{}),
		Usage:  sink,
		Bedrock: &extproc.BedrockOptions{
			Runtime: runtimeconfig.StaticSource{Config: runtime},
			Signer:  signer,
		},
	})
	if err != nil {
		return err
	}
	lis, err := extproc.Listen(addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "benchserver: pid %d serving on %s\n", os.Getpid(), addr)
	return srv.Serve(ctx, lis)
}
