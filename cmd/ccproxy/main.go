// Command ccproxy is the single binary of the ccproxy gateway: the ext_proc
// sidecar, the xDS control plane, the admin service, schema migrations and a
// one-process development mode. See README.md and docs/.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/ccproxy/ccproxy/internal/observability"
)

func main() {
	// go-redis logs its own troubles (failed dials, broken pool or pub/sub
	// connections) through one logger for the whole process, not one per
	// client, so it is set here, once: the command points it at the logger
	// it builds from --log-format and --log-level, and go-redis's lines come
	// out in the same format as every other line.
	redisLog := &observability.RedisLogger{}
	redis.SetLogger(redisLog)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root, p := newRoot(redisLog)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		// The error may quote a library's message that names a connection
		// URL: the running command's secrets are masked in it.
		fmt.Fprintln(os.Stderr, "ccproxy:", p.redact(err))
		os.Exit(1)
	}
}
