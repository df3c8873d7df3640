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

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/extproc"
	"github.com/ccproxy/ccproxy/extproc/auth"
	"github.com/ccproxy/ccproxy/extproc/usage"
	"github.com/ccproxy/ccproxy/internal/keys"
)

func main() {
	addr := flag.String("addr", "unix:///tmp/ccproxy-extproc-bench.sock", "listen address: unix:///path or host:port")
	key := flag.String("key", "ak_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "the one access key to accept")
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
	if err := run(*addr, *key, *logUsage); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(addr, key string, logUsage bool) error {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hasher, err := keys.NewHasher([]byte(strings.Repeat("b", keys.MinSecretLen)))
	if err != nil {
		return err
	}
	if _, err := keys.Parse(key); err != nil {
		return err
	}
	store := auth.MemoryStore{}
	store.Add(hasher, key, auth.KeyRecord{KeyID: uuid.New(), UserID: uuid.New(), Prefix: keys.DisplayPrefix(key)})
	var sink usage.Sink = usage.Discard{}
	if logUsage {
		sink = usage.LogSink{Logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	}
	srv, err := extproc.NewServer(extproc.Options{
		Logger: logger,
		Keys:   auth.NewCache(auth.NewStoreResolver(store, hasher, nil), hasher, auth.CacheConfig{}),
		Usage:  sink,
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
