// Command ccproxy-benchserver runs the real extproc server wired to fake
// dependencies, for measuring what ccproxy's ext_proc processing costs with
// the Envoy-playing driver, cmd/extproc-bench (scripts/bench-extproc.sh and
// docs/performance.md). It is not a deployment entry point: `ccproxy extproc`
// is.
//
// The fakes are the ones whose cost is not ccproxy's to measure: an in-memory
// key store behind the production key cache, holding exactly two access keys
// (a plan_first user and a bedrock_only user who signs with SigV4 over static
// credentials), a static Bedrock runtime configuration and a usage sink that
// discards events. Everything else — gRPC, routing, translation, signing,
// metering — is production code. The scenarios in extproc/testdata/bench put
// these keys in :path.
package main

import (
	"context"
	"errors"
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

// The access keys the scenarios in extproc/testdata/bench send.
const (
	defaultPlanKey    = "ak_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	defaultBedrockKey = "ak_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
)

// config is what the flags choose.
type config struct {
	planKey        string // the access key of a plan_first user without a Bedrock credential
	bedrockKey     string // the access key of a bedrock_only user (SigV4, us-east-1)
	logUsage       bool   // log every usage event instead of discarding it
	skipPlanBodies bool   // CCPROXY_PLAN_REQUEST_BODY=skip
}

func main() {
	addr := flag.String("addr", "unix:///tmp/ccproxy-extproc-bench.sock", "listen address: unix:///path or host:port")
	var cfg config
	flag.StringVar(&cfg.planKey, "key", defaultPlanKey, "the access key of a plan_first user")
	flag.StringVar(&cfg.bedrockKey, "bedrock-key", defaultBedrockKey, "the access key of a bedrock_only user (SigV4, us-east-1)")
	flag.BoolVar(&cfg.logUsage, "log-usage", false, "log every usage event (costs CPU)")
	flag.BoolVar(&cfg.skipPlanBodies, "skip-plan-request-bodies", false, "route Plan-alone requests on their headers (CCPROXY_PLAN_REQUEST_BODY=skip)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	// As the production extproc command does.
	extproc.TuneRuntime(os.Getenv, os.ReadFile)
	if err := run(*addr, *cpuProfile, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "ccproxy-benchserver:", err)
		os.Exit(1)
	}
}

func run(addr, cpuProfile string, cfg config) (err error) {
	if cpuProfile != "" {
		f, createErr := os.Create(cpuProfile)
		if createErr != nil {
			return createErr
		}
		if startErr := pprof.StartCPUProfile(f); startErr != nil {
			_ = f.Close()
			return startErr
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close())
		}()
	}
	srv, err := newServer(cfg)
	if err != nil {
		return err
	}
	lis, err := extproc.Listen(addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "ccproxy-benchserver: pid %d serving on %s\n", os.Getpid(), addr)
	return srv.Serve(ctx, lis)
}

// newServer builds the extproc server with the fake dependencies described in
// the package comment.
func newServer(cfg config) (*extproc.Server, error) {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hasher, err := keys.NewHasher([]byte(strings.Repeat("b", keys.MinSecretLen)))
	if err != nil {
		return nil, err
	}
	for _, k := range []string{cfg.planKey, cfg.bedrockKey} {
		if _, err := keys.Parse(k); err != nil {
			return nil, err
		}
	}
	store := accesskey.MemoryStore{}
	store.Add(hasher, cfg.planKey, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(cfg.planKey)})
	// The Bedrock user signs with SigV4 (static credentials standing in for
	// the ambient chain): the costlier of the two credential kinds.
	store.Add(hasher, cfg.bedrockKey, accesskey.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(cfg.bedrockKey),
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
		return nil, err
	}
	signer := bedrockauth.New(bedrockauth.Config{
		AWSCredentials: credentials.NewStaticCredentialsProvider("AKIDBENCHMARK", "bench-secret-access-key", ""),
	})
	var sink usage.Sink = usage.Discard{}
	if cfg.logUsage {
		sink = usage.LogSink{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	}
	return extproc.NewServer(extproc.Options{
		Logger: logger,
		Keys:   accesskey.NewCache(accesskey.NewStoreResolver(store, hasher, nil), hasher, accesskey.CacheConfig{}),
		Usage:  sink,

		SkipPlanRequestBodies: cfg.skipPlanBodies,
		Bedrock: &extproc.BedrockOptions{
			Runtime: runtimeconfig.StaticSource{Config: runtime},
			Signer:  signer,
		},
	})
}
