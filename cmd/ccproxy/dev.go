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
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/envoy/envoysim"
	"github.com/ccproxy/ccproxy/internal/config"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/observability"
	"github.com/ccproxy/ccproxy/internal/store"
)

func newDevCommand(p *process) *cobra.Command {
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
	s := &devSettings{}
	b := p.bind(cmd, s.groups()...)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := b.load(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		return runDev(cmd.Context(), s, log, cmd.OutOrStdout())
	}
	return cmd
}

// devSettings are the settings of `ccproxy dev`: those of the admin
// service, the control plane and extproc, each shared setting once, with
// loopback defaults; the addresses one part gives another are filled in as
// the parts start.
type devSettings struct {
	Postgres    config.Postgres
	Redis       config.Redis
	Keys        config.AccessKeys
	Secrets     config.Secrets
	Billing     config.Billing
	Serving     config.Serving
	Admin       adminServiceSettings
	AdminSec    adminSecuritySettings
	SSO         ssoSettings
	UsageIngest usageIngestSettings
	Webhooks    webhookSettings
	DataPlane   dataPlaneSettings
	XDSAddr     string
	Sidecar     sidecarSettings
	Breaker     breakerSettings
	Telemetry   config.Telemetry
	// StateDir keeps the generated secrets and the demo key.
	StateDir string
	// Resolve maps an upstream host:port (lower case) to the ip:port that
	// envoysim dials instead, like curl --resolve; nil when unset. An empty
	// ip:port (written nxdomain) means the name does not resolve.
	Resolve map[string]string
	// UpstreamFailure is envoysim's upstream failure rule
	// (envoysim.ParseUpstreamFailureRule): local-reply or stall.
	UpstreamFailure string
	// wrapRegisterer, when set, stands between the components and the
	// metrics registry: the metrics reference test records through it
	// every metric the gateway registers.
	wrapRegisterer func(prometheus.Registerer) prometheus.Registerer
}

func (s *devSettings) groups() []config.Group {
	return []config.Group{
		s.Postgres.Group(), s.Redis.Group(),
		// Generated and kept in the state directory when not given.
		s.Keys.Group().WithDefault("server-secret", ""),
		s.Secrets.Group(),
		s.Admin.group().WithDefault("admin-addr", "127.0.0.1:8081").WithDefault("admin-grpc-addr", "127.0.0.1:0"),
		s.AdminSec.group(), s.SSO.group(),
		s.DataPlane.group().WithDefault("listen-addr", "127.0.0.1:8080"),
		xdsGroup(&s.XDSAddr).WithDefault("xds-addr", "127.0.0.1:18000"),
		// A socket in the state directory when not given.
		s.Sidecar.group().WithDefault("extproc-addr", ""),
		s.Breaker.group(), s.Billing.Group(), s.UsageIngest.group(), s.Webhooks.group(), s.Serving.Group(), s.Telemetry.Group(), s.devGroup(),
	}
}

// devGroup is the settings only dev has.
func (s *devSettings) devGroup() config.Group {
	return config.Group{Title: "Development", Settings: []config.Setting{{
		Flag: "state-dir", Env: "CCPROXY_DEV_STATE_DIR",
		Usage: "directory where ccproxy dev keeps its generated server secret and demo access key (mode 0700); empty means $XDG_STATE_HOME/ccproxy or ~/.local/state/ccproxy",
		Set: func(v string) error {
			if v == "" {
				v = defaultStateDir()
			}
			s.StateDir = v
			return nil
		},
	}, {
		Flag: "dev-resolve", Env: "CCPROXY_DEV_RESOLVE",
		Usage: "comma-separated host:port=ip:port pairs: envoysim connects to ip:port for upstream host:port (like curl --resolve: Host, SNI and certificate checks keep the name), e.g. bedrock-runtime.us-east-1.amazonaws.com:443=127.0.0.1:18443; host:port=nxdomain makes the name not resolve",
		Set: func(v string) error {
			m, err := parseResolve(v)
			if err != nil {
				return err
			}
			s.Resolve = m
			return nil
		},
	}, {
		Flag: "envoysim-upstream-failure", Env: "CCPROXY_ENVOYSIM_UPSTREAM_FAILURE", Default: "local-reply",
		Usage: "how envoysim treats an upstream ext_proc failure and local replies: local-reply (Envoy 1.37 to 1.40: an immediate local reply, not retried, seen by the router-level processor) or stall (Envoy 1.35 and older: ignored, the attempt waits for per_try_timeout)",
		Set: func(v string) error {
			if _, err := envoysim.ParseUpstreamFailureRule(v); err != nil {
				return errors.New("must be local-reply or stall")
			}
			s.UpstreamFailure = v
			return nil
		},
	}}}
}

// admin returns the admin service's settings within dev's.
func (s *devSettings) admin() *adminSettings {
	return &adminSettings{
		Postgres: s.Postgres, Redis: s.Redis, Keys: s.Keys, Secrets: s.Secrets, Billing: s.Billing, Serving: s.Serving,
		Service: s.Admin, Security: s.AdminSec, UsageIngest: s.UsageIngest, Webhooks: s.Webhooks, Telemetry: s.Telemetry, SSO: s.SSO,
	}
}

// extproc returns extproc's settings within dev's, with the addresses of
// the control plane and the KeyService that dev started.
func (s *devSettings) extproc(controlPlaneAddr, keyServiceAddr string) *extprocSettings {
	return &extprocSettings{
		Redis: s.Redis, Keys: s.Keys, Secrets: s.Secrets, Billing: s.Billing, Serving: s.Serving,
		Sidecar: s.Sidecar, Breaker: s.Breaker, Telemetry: s.Telemetry,
		ControlPlaneAddr: controlPlaneAddr, KeyServiceAddr: keyServiceAddr,
		// Everything runs in this process on loopback: xDS is plaintext, explicitly
		// (controlplane.Server.Serve).
		ControlPlaneTLS: controlPlaneTLSSettings{Insecure: true},
	}
}

func runDev(ctx context.Context, s *devSettings, log *slog.Logger, out io.Writer) error {
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if len(s.Keys.ServerSecret) == 0 {
		secret, err := stateSecret(filepath.Join(s.StateDir, "server-secret"))
		if err != nil {
			return err
		}
		s.Keys.ServerSecret = secret
	}
	if len(s.Secrets.MasterKey) == 0 && s.Secrets.KMSKeyID == "" {
		key, err := stateSecret(filepath.Join(s.StateDir, "master-key"))
		if err != nil {
			return err
		}
		s.Secrets.MasterKey = key[:32]
	}
	if s.Sidecar.Addr == "" {
		s.Sidecar.Addr = "unix://" + filepath.Join(s.StateDir, "extproc.sock")
	}

	// A busy gateway port would only show as envoysim rejecting the
	// control plane's listener again and again: say it once and stop.
	if err := portFree(s.DataPlane.ListenAddr); err != nil {
		return fmt.Errorf("gateway address %s is in use (another ccproxy dev?); stop that process or choose another address with --listen-addr / CCPROXY_LISTEN_ADDR", s.DataPlane.ListenAddr)
	}
	if _, err := store.MigrateUp(ctx, s.Postgres.URL); err != nil {
		return withDatabaseHint(err, s.Postgres.URL)
	}
	st, err := store.Open(ctx, s.Postgres.URL)
	if err != nil {
		return err
	}
	defer st.Close()

	hasher, err := keys.NewHasher(s.Keys.ServerSecret)
	if err != nil {
		return err
	}
	demoKey, err := ensureDemoKey(ctx, st, hasher, filepath.Join(s.StateDir, "demo-key"))
	if err != nil {
		return err
	}

	rdb, err := redisClient(s.Redis)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := waitForRedis(ctx, rdb, out); err != nil {
		return err
	}
	reg := observability.NewRegistry()
	var registerer prometheus.Registerer = reg
	if s.wrapRegisterer != nil {
		registerer = s.wrapRegisterer(reg)
	}
	health := observability.NewHealth()
	health.Add("postgres", func(ctx context.Context) error { return st.Pool().Ping(ctx) })

	var opened closers
	defer opened.closeAll()
	var adminNote strings.Builder
	if s.Admin.GatewayURL == "" {
		s.Admin.GatewayURL = "http://" + s.DataPlane.ListenAddr
	}
	adminComps, ksAddr, err := adminComponents(ctx, s.admin(), log, st, rdb, registerer, &adminNote, &opened)
	if err != nil {
		return err
	}
	xdsLn, err := net.Listen("tcp", s.XDSAddr)
	if err != nil {
		return fmt.Errorf("xds: listen on %s (--xds-addr / CCPROXY_XDS_ADDR): %w", s.XDSAddr, err)
	}
	opened.add(xdsLn.Close)
	// The control plane reads the Bedrock regions and model mappings from
	// the database before serving, as in production.
	cpLog := log.With("component", "controlplane")
	cpBase := controlPlaneOptions(s.DataPlane, s.Sidecar.Addr)
	cpOpts, err := controlplane.DatabaseOptions(ctx, st, cpBase, cpLog)
	if err != nil {
		return err
	}
	cp, err := controlplane.NewServer(cpOpts, cpLog, registerer)
	if err != nil {
		return err
	}
	// extproc runs as in production, without the database: it resolves
	// keys through the KeyService and Redis, receives its runtime
	// configuration from the control plane over xDS and publishes usage to
	// the Redis stream that the admin components ingest.
	ep, err := newExtProc(ctx, s.extproc(xdsLn.Addr().String(), ksAddr), log, rdb, registerer, &opened)
	if err != nil {
		return err
	}
	rule, err := envoysim.ParseUpstreamFailureRule(s.UpstreamFailure)
	if err != nil {
		return err
	}
	// Like Envoy, envoysim writes the listener's access log to standard output (logs go to
	// standard error).
	sim, err := envoysim.New(envoysim.Options{
		XDSAddress: xdsLn.Addr().String(), NodeID: "ccproxy-dev", Logger: log.With("component", "envoysim"),
		Dial: devDialer(s.Resolve), Resolve: devResolver(s.Resolve), UpstreamFailureRule: rule, AccessLog: out,
	})
	if err != nil {
		return err
	}
	ep.addHealth(health, rdb)
	health.Add("envoysim", func(context.Context) error {
		select {
		case <-sim.Ready():
			return nil
		default:
			return errors.New("listener not serving yet")
		}
	})

	comps := append(append(adminComps, ep.comps...),
		component{"controlplane", func(ctx context.Context) error { return cp.Serve(ctx, xdsLn) }},
		component{"controlplane-db", func(ctx context.Context) error {
			return controlplane.WatchDatabase(ctx, st, cpBase, cp, cpLog)
		}},
		component{"envoysim", sim.Run},
		metricsComponent(s.Serving, log, reg, health),
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
			log.Info("gateway ready", "listen", sim.Addr(), "anthropic", s.DataPlane.AnthropicURL)
			fmt.Fprint(out, adminNote.String())
			announce(out, httpURL(sim.Addr()), httpURL(s.Admin.Addr), demoKey)
			return nil
		}},
	)
	opened.handOver()
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
		if to, ok := resolve[strings.ToLower(address)]; ok && to != "" {
			address = to
		}
		return d.DialContext(ctx, network, address)
	}
}

// devResolver is envoysim's STRICT_DNS resolver for the same overrides: a
// mapped name resolves to its target's address, one mapped to "" (nxdomain)
// does not resolve, so envoysim gives its endpoint no host as Envoy does;
// other names go to the system resolver.
func devResolver(resolve map[string]string) envoysim.ResolveFunc {
	if len(resolve) == 0 {
		return nil
	}
	names := map[string][]netip.Addr{}
	for hostport, to := range resolve {
		host, _, _ := net.SplitHostPort(hostport)
		addrs, seen := names[host]
		if to == "" {
			names[host] = nil
			continue
		}
		if seen && addrs == nil {
			continue // nxdomain wins
		}
		if ap, err := netip.ParseAddrPort(to); err == nil {
			names[host] = append(addrs, ap.Addr())
		}
	}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		if addrs, ok := names[strings.ToLower(host)]; ok {
			if addrs == nil {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return addrs, nil
		}
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
}

// announce prints what a developer does next. Every line that is not a
// comment can be pasted into a shell as it is. Claude Code sends
// ANTHROPIC_API_KEY as x-api-key and ANTHROPIC_AUTH_TOKEN as a bearer
// token, and when either is set it uses it instead of a subscription
// login; the gateway forwards whichever credential Claude Code sends, so
// subscription users set only the base URL.
func announce(out io.Writer, base, adminURL, key string) {
	fmt.Fprintf(out, `
==> ccproxy dev is ready: gateway %s (envoysim, for development only)
    admin dashboard %s/   admin API %s/api/v1

Point Claude Code at the gateway (paste into a shell, then run claude):

export ANTHROPIC_BASE_URL=%s/ak/%s

# Claude subscription (claude, then /login): set nothing else, and leave
# ANTHROPIC_API_KEY unset: it would replace your subscription.
# Anthropic API key instead: export ANTHROPIC_API_KEY="$YOUR_ANTHROPIC_API_KEY"

Next: bin/ccproxy login --server %s --username admin   (then: bin/ccproxy users list)

`, base, adminURL, adminURL, base, key, adminURL)
}

// httpURL is the URL a person opens for a listening address: an
// unspecified host (":8080", "0.0.0.0", "[::]") is reachable as localhost.
func httpURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// portFree reports whether addr can be listened on now.
func portFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

// withDatabaseHint adds to a failed database connection what to do: create
// a missing database, or check the user and password. The URL is named
// without its password.
func withDatabaseHint(err error, rawURL string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return err
	}
	switch pgErr.Code {
	case "3D000": // invalid_catalog_name: the database does not exist
		args := []string{"createdb"}
		if h := u.Hostname(); h != "" {
			args = append(args, "-h", h)
		}
		if p := u.Port(); p != "" {
			args = append(args, "-p", p)
		}
		if n := u.User.Username(); n != "" {
			args = append(args, "-U", n)
		}
		args = append(args, strings.TrimPrefix(u.Path, "/"))
		return fmt.Errorf("%w\nCreate the database first: %s (or point DATABASE_URL at an existing one)", err, strings.Join(args, " "))
	case "28P01", "28000": // invalid_password, invalid_authorization_specification
		return fmt.Errorf("%w\nCheck the user and password in DATABASE_URL / --database-url (%s)", err, u.Redacted())
	}
	return err
}

// waitForRedis returns once Redis answers. While it does not, it says so
// once on out and keeps trying every second, quietly: the gateway cannot
// resolve keys or meter usage without it.
func waitForRedis(ctx context.Context, rdb *redis.Client, out io.Writer) error {
	addr := rdb.Options().Addr
	said := false
	for {
		// Dial before pinging: a refused dial through the client would
		// also log go-redis's own pool warning every time.
		c, err := net.DialTimeout(rdb.Options().Network, addr, 2*time.Second)
		if err == nil {
			c.Close()
			if err = rdb.Ping(ctx).Err(); err == nil {
				if said {
					fmt.Fprintf(out, "Redis at %s is up; starting.\n", addr)
				}
				return nil
			}
			if !isNetErr(err) {
				// Reachable but refusing us (AUTH, TLS): waiting will not help.
				return fmt.Errorf("redis at %s: %w (check REDIS_URL / --redis-url)", addr, err)
			}
		}
		if !said {
			fmt.Fprintf(out, "Waiting for Redis at %s (%v); start it (make services) or set REDIS_URL. Still trying...\n", addr, err)
			said = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis at %s never answered: %w", addr, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF)
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

// parseResolve parses host:port=ip:port[,…]; an empty string is no overrides. The target
// nxdomain maps to "": the name does not resolve.
func parseResolve(v string) (map[string]string, error) {
	if v == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		from, to, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want host:port=ip:port", pair)
		}
		host, port, err := net.SplitHostPort(strings.TrimSpace(from))
		if err != nil || host == "" || !validPort(port) {
			return nil, fmt.Errorf("%q: %q is not host:port", pair, from)
		}
		key := net.JoinHostPort(strings.ToLower(host), port)
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s is given twice", key)
		}
		if strings.EqualFold(strings.TrimSpace(to), "nxdomain") {
			out[key] = ""
			continue
		}
		ip, toPort, err := net.SplitHostPort(strings.TrimSpace(to))
		if err != nil || !validPort(toPort) {
			return nil, fmt.Errorf("%q: %q is not ip:port", pair, to)
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("%q: %q is not an IP address", pair, ip)
		}
		out[key] = net.JoinHostPort(addr.String(), toPort)
	}
	return out, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n <= 65535 && strconv.Itoa(n) == p
}

func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return d + "/ccproxy"
	}
	if h, err := os.UserHomeDir(); err == nil {
		return h + "/.local/state/ccproxy"
	}
	return ".ccproxy"
}
