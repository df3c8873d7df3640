package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/envoy/envoysim"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
)

func newDevCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole gateway in one process on this machine, with envoysim as the data plane",
		Long: `Runs migrations, the control plane, the ext_proc server and envoysim (a Go stand-in for Envoy that
reads the same xDS configuration) in one process, for a laptop and for tests. Production traffic runs
on Envoy; see README.md.

On first start it creates a demo user and access key and prints the export lines for Claude Code.
The server secret and the demo key are kept in --state-dir so that restarts keep them.`,
		Args: cobra.NoArgs,
	}
	b := settings(cmd,
		config.Database(), config.Redis(), config.RedisNamespace(), config.WithDefault(config.Keys(), "server-secret", ""), config.Secrets(),
		config.WithDefault(config.WithDefault(config.Admin(), "admin-addr", "127.0.0.1:8081"), "admin-grpc-addr", "127.0.0.1:0"),
		config.WithDefault(config.DataPlane(), "listen-addr", "127.0.0.1:8080"),
		config.WithDefault(config.XDS(), "xds-addr", "127.0.0.1:18000"),
		config.WithDefault(config.ExtProc(), "extproc-addr", ""),
		config.Billing(), config.UsageIngest(), config.Serving(), config.Dev())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, log, err := load(b, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		return runDev(cmd.Context(), cfg, log, cmd.OutOrStdout())
	}
	return cmd
}

func runDev(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	if err := os.MkdirAll(cfg.DevStateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if len(cfg.ServerSecret) == 0 {
		secret, err := stateSecret(filepath.Join(cfg.DevStateDir, "server-secret"))
		if err != nil {
			return err
		}
		cfg.ServerSecret = secret
	}
	if len(cfg.MasterKey) == 0 && cfg.KMSKeyID == "" {
		key, err := stateSecret(filepath.Join(cfg.DevStateDir, "master-key"))
		if err != nil {
			return err
		}
		cfg.MasterKey = key[:32]
	}
	if cfg.ExtProcAddr == "" {
		cfg.ExtProcAddr = "unix://" + filepath.Join(cfg.DevStateDir, "extproc.sock")
	}

	if _, err := store.MigrateUp(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()

	hasher, err := keys.NewHasher(cfg.ServerSecret)
	if err != nil {
		return err
	}
	demoKey, err := ensureDemoKey(ctx, st, hasher, filepath.Join(cfg.DevStateDir, "demo-key"))
	if err != nil {
		return err
	}

	rdb, err := redisClient(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg := observability.NewRegistry()
	health := observability.NewHealth()
	health.Add("postgres", func(ctx context.Context) error { return st.Pool().Ping(ctx) })
	health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })

	var adminNote strings.Builder
	adminComps, ksAddr, err := adminComponents(ctx, cfg, log, st, rdb, reg, &adminNote)
	if err != nil {
		return err
	}
	xdsLn, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		return fmt.Errorf("xds: listen on %s: %w", cfg.XDSAddr, err)
	}
	// The control plane reads the Bedrock regions and model mappings from
	// the database before serving, as in production.
	cpLog := log.With("component", "controlplane")
	cpOpts, err := controlplane.DatabaseOptions(ctx, st, controlPlaneOptions(cfg), cpLog)
	if err != nil {
		xdsLn.Close()
		return err
	}
	cp, err := controlplane.NewServer(cpOpts, cpLog, reg)
	if err != nil {
		xdsLn.Close()
		return err
	}
	// extproc runs as in production, without the database: it resolves
	// keys through the KeyService and Redis, receives its runtime
	// configuration from the control plane over xDS and publishes usage to
	// the Redis stream that the admin components ingest.
	cfg.ControlPlaneAddr = xdsLn.Addr().String()
	ep, err := newExtProc(ctx, cfg, log, rdb, ksAddr, reg)
	if err != nil {
		xdsLn.Close()
		return err
	}
	sim, err := envoysim.New(envoysim.Options{XDSAddress: xdsLn.Addr().String(), NodeID: "ccproxy-dev", Logger: log, Dial: devDialer(cfg.DevResolve)})
	if err != nil {
		return err
	}
	health.Add("key-invalidation", ep.invalidationReady)
	health.Add("envoysim", func(context.Context) error {
		select {
		case <-sim.Ready():
			return nil
		default:
			return errors.New("listener not serving yet")
		}
	})

	comps := append(append(adminComps, ep.components()...),
		component{"controlplane", func(ctx context.Context) error { return cp.Serve(ctx, xdsLn) }},
		component{"controlplane-db", func(ctx context.Context) error {
			return controlplane.WatchDatabase(ctx, st, controlPlaneOptions(cfg), cp, cpLog)
		}},
		component{"envoysim", sim.Run},
		metricsComponent(cfg, log, reg, health),
		component{"announce", func(ctx context.Context) error {
			// Ready once envoysim serves and extproc's key invalidation feed
			// is live (its first subscription purges the keys resolved so far).
			for _, ready := range []<-chan struct{}{sim.Ready(), ep.subscribed} {
				select {
				case <-ready:
				case <-ctx.Done():
					return nil
				}
			}
			fmt.Fprint(out, adminNote.String())
			announce(out, "http://"+sim.Addr(), "http://"+cfg.AdminAddr, demoKey)
			log.Info("gateway ready", "listen", sim.Addr(), "anthropic", cfg.AnthropicURL)
			return nil
		}},
	)
	return runAll(ctx, log, comps...)
}

// devDialer maps upstream host:port pairs to other addresses (like curl
// --resolve), so that tests can serve Bedrock's real host names from
// loopback while envoysim keeps SNI and certificate checks on those names.
func devDialer(resolve map[string]string) envoysim.DialFunc {
	if len(resolve) == 0 {
		return nil
	}
	d := &net.Dialer{}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if to, ok := resolve[strings.ToLower(address)]; ok {
			address = to
		}
		return d.DialContext(ctx, network, address)
	}
}

func announce(out io.Writer, base, adminURL, key string) {
	fmt.Fprintf(out, `ccproxy dev is running: gateway %s (envoysim, for development only), admin API %s/api/v1.

Point Claude Code at it with your own Anthropic credential:

export ANTHROPIC_BASE_URL=%s/ak/%s
export ANTHROPIC_API_KEY=<your Anthropic API key, or use ANTHROPIC_AUTH_TOKEN or your claude login>

`, base, adminURL, base, key)
}

// stateSecret returns the server secret kept in path, creating a random one
// the first time.
func stateSecret(path string) ([]byte, error) {
	if raw, err := os.ReadFile(path); err == nil {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil || len(b) < keys.MinSecretLen {
			return nil, fmt.Errorf("state file %s does not hold a valid secret; remove it to start over", path)
		}
		return b, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return b, nil
}

// ensureDemoKey returns the demo access key kept in path if it still
// authenticates against this database; otherwise it creates a demo user
// (the first start on a database) and a new key, and keeps it in path.
func ensureDemoKey(ctx context.Context, st *store.Store, hasher *keys.Hasher, path string) (string, error) {
	if raw, err := os.ReadFile(path); err == nil {
		if key, err := keys.Parse(strings.TrimSpace(string(raw))); err == nil {
			l, err := st.AccessKeys().LookupByHash(ctx, hasher.Hash(key))
			if err == nil && l.Key.Status == store.KeyActive && l.User.DeletedAt == nil && l.User.Status == store.UserActive {
				return key, nil
			}
		}
	}
	key, err := keys.Generate()
	if err != nil {
		return "", err
	}
	err = st.WithTx(ctx, func(q *store.Queries) error {
		const email = "demo@localhost"
		// The demo user exists when only its key file was lost: it gets a new key.
		u, err := findUserByEmail(ctx, q, email)
		if errors.Is(err, store.ErrNotFound) {
			e := email
			u, err = q.Users().Create(ctx, store.NewUser{Name: "demo", Email: &e, RoutingStrategy: store.PlanFirst})
		}
		if err != nil {
			return err
		}
		_, err = q.AccessKeys().Create(ctx, store.NewAccessKey{UserID: u.ID, Name: "demo", Hash: hasher.Hash(key), Prefix: keys.DisplayPrefix(key)})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create demo user and key: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return key, nil
}

func findUserByEmail(ctx context.Context, q *store.Queries, email string) (store.User, error) {
	cursor := ""
	for {
		users, next, err := q.Users().List(ctx, store.UserListOptions{Limit: store.MaxPageSize, Cursor: cursor})
		if err != nil {
			return store.User{}, err
		}
		for _, u := range users {
			if u.Email != nil && strings.EqualFold(*u.Email, email) {
				return u, nil
			}
		}
		if next == "" {
			return store.User{}, fmt.Errorf("user %s: %w", email, store.ErrNotFound)
		}
		cursor = next
	}
}
