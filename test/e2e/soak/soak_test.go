package soak

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ccproxy/ccproxy/envoy/envoysim"
	"github.com/ccproxy/ccproxy/internal/bedrockpolicy"
	"github.com/ccproxy/ccproxy/internal/testenv/procs"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

const (
	anthropicHost  = "api.anthropic.com"
	eastHost       = "bedrock-runtime.us-east-1.amazonaws.com"
	bedrockAPIKey  = "ABSKc29hay1iZWRyb2NrLWtleS1mb3ItY2Nwcm94eQ=="
	planCredential = "sk-ant-api03-soak-plan-credential"
	adminPassword  = "soak-admin-password-0123456789"
	model          = "claude-opus-5-5"
	// requestTimeout is how long a client waits for a whole answer; a
	// request still running then is hung.
	requestTimeout = 30 * time.Second
	// readyTimeout bounds a component's restart (dependencies recovering
	// included); a fault not recovered from within it fails the soak.
	readyTimeout = 90 * time.Second
)

// soakEnv is the running installation: servers, fakes, processes and the
// data plane.
type soakEnv struct {
	t      *testing.T
	pg     *procs.Postgres
	rd     *procs.Redis
	db     *pgxpool.Pool
	dbURL  string
	prefix string

	plan *fakeanthropic.Server
	fb   *fakebedrock.Server

	extproc, admin, controlplane *component
	comps                        []*component

	gateway   string // http://host:port of envoysim
	adminBase string // http://host:port of the admin API
	token     string // admin session

	users struct{ plan, bedrock, fallback user }
	// began is when the soak's traffic and chaos began; the summary's
	// times count from it.
	began time.Time
	reqs  *registry
}

type user struct{ ID, Key, KeyID string }

// duration is SOAK_DURATION, 60 s by default.
func duration(t *testing.T) time.Duration {
	v := os.Getenv("SOAK_DURATION")
	if v == "" {
		if testing.Short() {
			t.Skip("chaos soak: not in -short mode")
		}
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SOAK_DURATION=%q: want a positive duration such as 10m", v)
	}
	return d
}

// seed is SOAK_SEED, or a new random one.
func seed(t *testing.T) uint64 {
	if v := os.Getenv("SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: want an unsigned integer", v)
		}
		return s
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	var s uint64
	for _, x := range b {
		s = s<<8 | uint64(x)
	}
	return s
}

// TestSoak is the chaos soak (package doc).
func TestSoak(t *testing.T) {
	d := duration(t)
	sd := seed(t)
	t.Logf("soak: duration %s, seed %d (SOAK_SEED=%d replays the schedule)", d, sd, sd)
	env := setup(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Warm-up, then the baseline the end state is compared with: every
	// process has served each kind of request once and is idle again.
	warm := newTraffic(env, sd, 1)
	warm.runFor(ctx, 5*time.Second)
	env.waitSettled(t)
	base := env.snapshot(t)

	traffic := newTraffic(env, sd, 6)
	chaos := newChaos(env, sd)
	began := time.Now()
	env.began = began
	done := make(chan struct{})
	go func() { defer close(done); traffic.runFor(ctx, d) }()
	chaosDone := make(chan struct{})
	cctx, stopChaos := context.WithCancel(ctx)
	go func() { defer close(chaosDone); chaos.run(cctx) }()
	<-done
	stopChaos()
	<-chaosDone
	elapsed := time.Since(began)

	// Everything is up again (the chaos loop restores what it broke before
	// returning); the usage pipeline drains; the end state is measured.
	env.waitAllReady(t)
	env.waitSettled(t)
	end := env.snapshot(t)

	rep := env.check(t, warm, traffic, chaos, base, end)
	rep.elapsed, rep.seed = elapsed, sd
	t.Log("\n" + rep.String())
	if out := os.Getenv("SOAK_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(rep.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func setup(t *testing.T) *soakEnv {
	t.Helper()
	env := &soakEnv{t: t, prefix: "ccsoak:", reqs: &registry{m: map[string]*spec{}}}
	env.pg = procs.StartPostgres(t)
	// The append-only file with fsync on every write: what docs/operations.md
	// asks of a Redis holding the usage stream. Without it a Redis crash
	// loses the stream entries not yet ingested, which this soak would
	// (rightly) report as lost usage.
	env.rd = procs.StartRedis(t, procs.WithAOF())
	env.dbURL = env.pg.CreateDB(t, "ccproxy")

	ca := fakebedrock.NewCA(t)
	env.plan = fakeanthropic.NewTLS(t, env.reqs.plan, ca.Leaf(t, anthropicHost))
	env.fb = fakebedrock.New(t, fakebedrock.Config{
		Hosts:   []string{eastHost},
		CA:      ca,
		APIKeys: []string{bedrockAPIKey},
		Betas:   bedrockBetas(),
		Handler: env.reqs.bedrock,
	})
	t.Cleanup(func() {
		if f := env.plan.Failures(); len(f) > 0 {
			t.Errorf("the Plan fake found problems: %q", f[:min(len(f), 5)])
		}
	})

	dir := t.TempDir()
	// Unix socket paths are limited to 108 bytes; test temp dirs are long.
	sockDir, err := os.MkdirTemp("", "ccsoak")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	extprocAddr := "unix://" + filepath.Join(sockDir, "extproc.sock")
	addrs := freeAddrs(t, 8)
	listen, xds, adminAddr, adminGRPC := addrs[0], addrs[1], addrs[2], addrs[3]
	secret := randomBase64(t)
	masterKey := randomBase64(t)
	common := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"CCPROXY_LOG_FORMAT=json",
		"CCPROXY_SHUTDOWN_TIMEOUT=10s",
	}
	with := func(extra ...string) []string { return append(append([]string(nil), common...), extra...) }

	migrate := with("DATABASE_URL=" + env.dbURL)
	cmd := newCmd(binary, migrate, "migrate", "up")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ccproxy migrate up: %v\n%s", err, out)
	}

	env.admin = &component{name: "admin", args: []string{"admin"}, logPath: filepath.Join(dir, "admin.log"), metricsAddr: addrs[4],
		env: with("DATABASE_URL="+env.dbURL, "REDIS_URL="+env.rd.URL(), "CCPROXY_REDIS_PREFIX="+env.prefix,
			"CCPROXY_SERVER_SECRET="+secret, "CCPROXY_MASTER_KEY="+masterKey,
			"CCPROXY_ADMIN_ADDR="+adminAddr, "CCPROXY_ADMIN_GRPC_ADDR="+adminGRPC,
			"CCPROXY_ADMIN_PASSWORD="+adminPassword, "CCPROXY_METRICS_ADDR="+addrs[4],
			// A killed admin leaves its batch pending; the restarted one is
			// another consumer and takes it over after this idle time.
			"CCPROXY_USAGE_CLAIM_IDLE=5s")}
	env.controlplane = &component{name: "controlplane", args: []string{"controlplane"}, logPath: filepath.Join(dir, "controlplane.log"), metricsAddr: addrs[5],
		env: with("DATABASE_URL="+env.dbURL, "CCPROXY_XDS_ADDR="+xds, "CCPROXY_LISTEN_ADDR="+listen,
			"CCPROXY_EXTPROC_ADDR="+extprocAddr, "CCPROXY_ANTHROPIC_URL=https://"+anthropicHost,
			"CCPROXY_UPSTREAM_CA_FILE="+ca.File, "CCPROXY_METRICS_ADDR="+addrs[5],
			// Every process is on loopback, as in `ccproxy dev`.
			"CCPROXY_XDS_INSECURE=true")}
	env.extproc = &component{name: "extproc", args: []string{"extproc"}, logPath: filepath.Join(dir, "extproc.log"), metricsAddr: addrs[6],
		env: with("REDIS_URL="+env.rd.URL(), "CCPROXY_REDIS_PREFIX="+env.prefix,
			"CCPROXY_SERVER_SECRET="+secret, "CCPROXY_MASTER_KEY="+masterKey,
			"CCPROXY_EXTPROC_ADDR="+extprocAddr, "CCPROXY_CONTROLPLANE_ADDR="+xds,
			"CCPROXY_KEYSERVICE_ADDR="+adminGRPC, "CCPROXY_METRICS_ADDR="+addrs[6],
			"CCPROXY_CONTROLPLANE_INSECURE=true",
			// Short Plan 429 windows keep the fallback user moving between
			// fallback and breaker_open rows.
			"CCPROXY_BREAKER_MAX_OPEN=2s", "CCPROXY_BREAKER_DEFAULT_OPEN=2s",
			// Usage events waiting for Redis survive a SIGKILL here.
			"CCPROXY_USAGE_SPOOL_DIR="+filepath.Join(dir, "extproc-spool"))}
	env.comps = []*component{env.admin, env.controlplane, env.extproc}
	ctx := context.Background()
	for _, c := range env.comps {
		if err := c.startReady(ctx, binary, readyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, tailFile(c.logPath))
		}
	}
	t.Cleanup(func() {
		for _, c := range env.comps {
			c.stop(t)
			if t.Failed() {
				t.Logf("%s log (end):\n%s", c.name, tailFile(c.logPath))
			}
		}
	})

	// The data plane: envoysim in this process, configured by the control
	// plane over xDS like an Envoy, with the fakes' host names mapped to
	// loopback (SNI and certificates keep the real names).
	simLog, err := os.Create(filepath.Join(dir, "envoysim.log"))
	if err != nil {
		t.Fatal(err)
	}
	resolve := map[string]string{anthropicHost + ":443": env.plan.Addr(), eastHost + ":443": env.fb.Addr()}
	dialer := &net.Dialer{}
	sim, err := envoysim.New(envoysim.Options{XDSAddress: xds, NodeID: "ccproxy-soak",
		Logger: slog.New(slog.NewJSONHandler(simLog, nil)),
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if to, ok := resolve[address]; ok {
				address = to
			}
			return dialer.DialContext(ctx, network, address)
		}})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(simCtx) }()
	t.Cleanup(func() {
		stopSim()
		<-simDone
		simLog.Close()
	})
	select {
	case <-sim.Ready():
	case err := <-simDone:
		t.Fatalf("envoysim: %v", err)
	case <-time.After(readyTimeout):
		t.Fatal("envoysim not serving after 90 s")
	}
	env.comps = append(env.comps, &component{name: "envoysim (in the test process)", logPath: simLog.Name()})
	env.gateway = "http://" + sim.Addr()
	env.adminBase = "http://" + adminAddr

	pool, err := pgxpool.New(ctx, env.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	env.db = pool

	env.token = env.login(t)
	east := map[string]string{"type": "api_key", "api_key": bedrockAPIKey, "region": "us-east-1"}
	env.users.plan = env.newUser(t, "plan", "plan_first", nil)
	env.users.bedrock = env.newUser(t, "bedrock", "bedrock_only", east)
	env.users.fallback = env.newUser(t, "fallback", "plan_first", east)
	env.waitRoutes(t)
	return env
}

func (env *soakEnv) login(t *testing.T) string {
	t.Helper()
	var out struct{ Token string }
	if status, err := env.call(context.Background(), "POST", "/api/v1/auth/login",
		map[string]string{"username": "admin", "password": adminPassword}, &out); err != nil || status != 200 || out.Token == "" {
		t.Fatalf("admin login: %d %v", status, err)
	}
	return out.Token
}

// call makes one admin API call, returning the status.
func (env *soakEnv) call(ctx context.Context, method, path string, in, out any) (int, error) {
	var body bytes.Buffer
	if in != nil {
		_ = json.NewEncoder(&body).Encode(in)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, env.adminBase+path, &body)
	if env.token != "" {
		req.Header.Set("Authorization", "Bearer "+env.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode < 300 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %.200s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

func (env *soakEnv) newUser(t *testing.T, name, strategy string, cred map[string]string) user {
	t.Helper()
	ctx := context.Background()
	var u struct{ ID string }
	if _, err := env.call(ctx, "POST", "/api/v1/users", map[string]any{"name": name, "routing_strategy": strategy}, &u); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		if _, err := env.call(ctx, "PUT", "/api/v1/users/"+u.ID+"/bedrock", cred, nil); err != nil {
			t.Fatal(err)
		}
	}
	k, err := env.issueKey(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	return user{ID: u.ID, Key: k.Key, KeyID: k.ID}
}

type issued struct{ ID, Key string }

func (env *soakEnv) issueKey(ctx context.Context, userID string) (issued, error) {
	var k issued
	_, err := env.call(ctx, "POST", "/api/v1/users/"+userID+"/keys", map[string]any{"name": "soak"}, &k)
	if err == nil && (k.Key == "" || k.ID == "") {
		err = fmt.Errorf("issued key without id or key")
	}
	return k, err
}

// waitRoutes waits until the us-east-1 routes (Bedrock and fallback, one
// snapshot) reach envoysim and extproc: before, an unknown model is a 503,
// after, the router refuses it with 400.
func (env *soakEnv) waitRoutes(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		status, _ := env.post(context.Background(), env.users.bedrock.Key, "/v1/messages", `{"model":"claude-not-a-model","max_tokens":1,"messages":[]}`, "")
		if status == 400 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Bedrock routes not ready after %s: last status %d", readyTimeout, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// post sends one request through the gateway and reads the whole answer.
func (env *soakEnv) post(ctx context.Context, key, path, body, session string) (int, []byte) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, env.gateway+"/ak/"+key+path, strings.NewReader(body))
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", planCredential)
	if session != "" {
		req.Header.Set("x-claude-code-session-id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitAllReady waits until every process answers /readyz.
func (env *soakEnv) waitAllReady(t *testing.T) {
	t.Helper()
	for _, c := range env.comps[:3] {
		deadline := time.Now().Add(readyTimeout)
		for c.ready(context.Background()) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready at the end of the soak", c.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// bedrockBetas is what the fake Bedrock accepts: every flag the gateway's
// allow-list forwards.
func bedrockBetas() []string {
	var out []string
	for _, r := range bedrockpolicy.DefaultBetaTable().Rules {
		switch r.Action {
		case bedrockpolicy.BetaKeep:
			out = append(out, r.Anthropic)
		case bedrockpolicy.BetaRename:
			out = append(out, r.Bedrock)
		}
	}
	return out
}

func randomBase64(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago (the listeners are held until all n are chosen).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}
