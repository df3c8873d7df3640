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
)

// version is set at link time (-ldflags "-X main.version=…") by the Makefile.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ccproxy:", err)
		os.Exit(1)
	}
}
