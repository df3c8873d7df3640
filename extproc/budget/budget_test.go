package budget_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/shopspring/decimal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminks "github.com/ccproxy/ccproxy/admin/keyservice"
	"github.com/ccproxy/ccproxy/extproc/budget"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/internal/testenv/parked"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

// clock is a manually advanced time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a real admin KeyService (Postgres) and Redis for one test.
type env struct {
	st     *store.Store
	rdb    *redis.Client
	prefix string
	loc    *time.Location
	srv    *grpc.Server
	client keyservicev1.KeyServiceClient
}

func newEnv(t *testing.T, loc *time.Location) *env {
	t.Helper()
	e := &env{st: storetest.Open(t), loc: loc}
	e.rdb, e.prefix = testenv.Redis(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = grpc.NewServer()
	// Every call recomputes (the KeyService's reuse of answers is tested with it).
	adminks.NewServer(e.st, adminks.Options{Redis: e.rdb, RedisPrefix: e.prefix, Location: loc, SpendReuse: time.Nanosecond}).Register(e.srv)
	go e.srv.Serve(lis)
	t.Cleanup(e.srv.Stop)
	e.client = dial(t, lis.Addr().String())
	return e
}

func dial(t *testing.T, addr string) keyservicev1.KeyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return keyservicev1.NewKeyServiceClient(conn)
}

// newUser creates a user: the KeyService recomputes spend only for users that exist.
func (e *env) newUser(t *testing.T) uuid.UUID {
	t.Helper()
	u, err := e.st.Users().Create(context.Background(), store.NewUser{Name: "u-" + uuid.NewString()[:8], RoutingStrategy: store.BedrockOnly})
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// spend records a Bedrock usage event of cost USD for user at at.
func (e *env) spend(t *testing.T, user uuid.UUID, at time.Time, cost string) {
	t.Helper()
	e.insert(t, user, store.ProviderBedrock, at, cost)
}

func (e *env) insert(t *testing.T, user uuid.UUID, provider store.Provider, at time.Time, cost string) {
	t.Helper()
	ev := store.UsageEvent{
		RequestID: "req-" + uuid.NewString(), EventTime: at, UserID: user, AccessKeyID: uuid.New(),
		Kind: store.KindMessages, RequestedModel: "claude-sonnet-4-5", Provider: provider, Status: 200,
		InputTokens: 1, OutputTokens: 1, CostUSD: decimal.RequireFromString(cost), PriceFlag: store.PriceExact,
	}
	if _, err := e.st.Usage().InsertEvents(context.Background(), []store.UsageEvent{ev}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) counterKey(user uuid.UUID, month string) string {
	return e.prefix + "spend:" + user.String() + ":" + month
}

// flush deletes every key under the test's prefix, as a Redis flush would.
func (e *env) flush(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	keys, err := e.rdb.Keys(ctx, e.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := e.rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

type checker struct {
	*budget.Checker
	reg *prometheus.Registry
}

func (e *env) checker(t *testing.T, cfg budget.Config) checker {
	t.Helper()
	if cfg.Redis == nil {
		cfg.Redis = e.rdb
	}
	if cfg.KeyService == nil {
		cfg.KeyService = e.client
	}
	cfg.Prefix = e.prefix
	cfg.Location = e.loc
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c, err := budget.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return checker{c, reg}
}

// count returns the value of a counter with the given label value ("" for
// none).
func (c checker) count(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// deadRedis is a client for a port nothing listens on.
func deadRedis(t *testing.T) *redis.Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

func deadKeyService(t *testing.T) keyservicev1.KeyServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return dial(t, addr)
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func mustCheck(t *testing.T, c checker, user uuid.UUID, b string) budget.Status {
	t.Helper()
	st, err := c.Check(context.Background(), user, dec(b))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var mar15 = time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)

func TestUnderAndOverBudget(t *testing.T) {
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "0.1")
	e.spend(t, user, mar15.Add(-2*time.Hour), "0.2")
	e.spend(t, user, time.Date(2026, 2, 28, 23, 59, 59, 0, time.UTC), "1000") // last month
	e.insert(t, user, store.ProviderAnthropic, mar15.Add(-time.Hour), "1000") // Plan is not budgeted
	clk := &clock{now: mar15}
	c := e.checker(t, budget.Config{Now: clk.Now})
	reset := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)

	for _, tc := range []struct {
		budget string
		over   bool
	}{
		{"10", false},
		{"0.300001", false},
		{"0.3", true}, // spent == budget: the budget is used up
		{"0.30", true},
		{"0.299999", true},
		{"0", true},
	} {
		st := mustCheck(t, c, user, tc.budget)
		if !st.Spent.Equal(dec("0.3")) || !st.Budget.Equal(dec(tc.budget)) || st.Over != tc.over || !st.ResetAt.Equal(reset) || st.Stale {
			t.Fatalf("budget %s: status = %+v, want spent 0.3, over %v, reset %v", tc.budget, st, tc.over, reset)
		}
	}
	if got := c.count(t, "ccproxy_extproc_budget_over_total", ""); got != 4 {
		t.Fatalf("over_total = %v, want 4", got)
	}
	if got := c.count(t, "ccproxy_extproc_budget_checks_total", "rpc"); got != 1 {
		t.Fatalf("rpc checks = %v, want 1 (then the cache)", got)
	}
	if got := c.count(t, "ccproxy_extproc_budget_checks_total", "cache"); got != 5 {
		t.Fatalf("cache checks = %v, want 5", got)
	}
}

func TestLayersAndRedisFlush(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "7.25")
	clk := &clock{now: mar15}
	c := e.checker(t, budget.Config{Now: clk.Now})
	key := e.counterKey(user, "2026-03")

	// The counter is missing: the KeyService computes it and stores it.
	if st := mustCheck(t, c, user, "7.25"); !st.Spent.Equal(dec("7.25")) || !st.Over {
		t.Fatalf("status = %+v", st)
	}
	if v, err := e.rdb.Get(ctx, key).Result(); err != nil || v != "7.250000" {
		t.Fatalf("counter = %q, %v", v, err)
	}

	// The ingester moves the counter: the in-process cache hides it for
	// CacheTTL, then Redis answers.
	e.rdb.Set(ctx, key, "1.000000", time.Hour)
	if st := mustCheck(t, c, user, "7.25"); !st.Spent.Equal(dec("7.25")) {
		t.Fatalf("within CacheTTL: status = %+v, want the cached 7.25", st)
	}
	clk.Add(budget.DefaultCacheTTL)
	if st := mustCheck(t, c, user, "7.25"); !st.Spent.Equal(dec("1")) || st.Over {
		t.Fatalf("after CacheTTL: status = %+v, want 1 from redis", st)
	}
	if got := c.count(t, "ccproxy_extproc_budget_checks_total", "redis"); got != 1 {
		t.Fatalf("redis checks = %v", got)
	}

	// Survives a Redis flush: the counter is rebuilt from Postgres and the
	// answer is the same as before the ingester's (test) write.
	e.flush(t)
	clk.Add(budget.DefaultCacheTTL)
	if st := mustCheck(t, c, user, "7.25"); !st.Spent.Equal(dec("7.25")) || !st.Over {
		t.Fatalf("after flush: status = %+v", st)
	}
	if v, err := e.rdb.Get(ctx, key).Result(); err != nil || v != "7.250000" {
		t.Fatalf("counter after flush = %q, %v", v, err)
	}
	if got := c.count(t, "ccproxy_extproc_budget_checks_total", "rpc"); got != 2 {
		t.Fatalf("rpc checks = %v, want 2", got)
	}

	// Another instance reads the rebuilt counter without asking the
	// KeyService.
	other := e.checker(t, budget.Config{Now: clk.Now, KeyService: deadKeyService(t)})
	if st := mustCheck(t, other, user, "100"); !st.Spent.Equal(dec("7.25")) || st.Over {
		t.Fatalf("second instance: status = %+v", st)
	}

	// An unreadable counter is recomputed and repaired.
	e.rdb.Set(ctx, key, "not a number", time.Hour)
	clk.Add(budget.DefaultCacheTTL)
	if st := mustCheck(t, c, user, "7.25"); !st.Spent.Equal(dec("7.25")) {
		t.Fatalf("unreadable counter: status = %+v", st)
	}
	if v, _ := e.rdb.Get(ctx, key).Result(); v != "7.250000" {
		t.Fatalf("counter after repair = %q", v)
	}
}

func TestRedisDownAsksKeyService(t *testing.T) {
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "3")
	clk := &clock{now: mar15}
	c := e.checker(t, budget.Config{Now: clk.Now, Redis: deadRedis(t)})
	for i := range 5 { // past the Redis breaker opening
		st := mustCheck(t, c, user, "5")
		if !st.Spent.Equal(dec("3")) || st.Over || st.Stale {
			t.Fatalf("check %d: status = %+v", i, st)
		}
		clk.Add(budget.DefaultCacheTTL)
	}
	if got := c.count(t, "ccproxy_extproc_budget_checks_total", "rpc"); got != 5 {
		t.Fatalf("rpc checks = %v, want 5", got)
	}
	if got := c.count(t, "ccproxy_extproc_budget_dependency_errors_total", "redis"); got != 5 {
		t.Fatalf("redis errors = %v, want 5", got)
	}
	if r, _ := c.BreakerStates(); r.String() != "open" {
		t.Fatalf("redis breaker = %v, want open", r)
	}
}

func TestBothDown(t *testing.T) {
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "12")
	clk := &clock{now: mar15}
	rdb := redis.NewClient(&redis.Options{Addr: e.rdb.Options().Addr, DB: e.rdb.Options().DB, Password: e.rdb.Options().Password})
	c := e.checker(t, budget.Config{Now: clk.Now, Redis: rdb})
	if st := mustCheck(t, c, user, "10"); !st.Over || st.Stale {
		t.Fatalf("status = %+v", st)
	}

	rdb.Close()
	e.srv.Stop()

	t.Run("a recent value is served stale", func(t *testing.T) {
		clk.Add(budget.DefaultStaleTTL - time.Second)
		for _, b := range []string{"10", "20"} {
			st, err := c.Check(context.Background(), user, dec(b))
			if err != nil {
				t.Fatal(err)
			}
			if !st.Stale || !st.Spent.Equal(dec("12")) || st.Over != (b == "10") {
				t.Fatalf("budget %s: status = %+v", b, st)
			}
		}
		if got := c.count(t, "ccproxy_extproc_budget_checks_total", "stale"); got != 2 {
			t.Fatalf("stale checks = %v", got)
		}
	})
	t.Run("an old value is not", func(t *testing.T) {
		clk.Add(time.Second)
		if st, err := c.Check(context.Background(), user, dec("10")); err == nil {
			t.Fatalf("Check = %+v, want an error", st)
		}
		if got := c.count(t, "ccproxy_extproc_budget_check_errors_total", ""); got != 1 {
			t.Fatalf("check errors = %v", got)
		}
	})
	t.Run("no value at all", func(t *testing.T) {
		fresh := e.checker(t, budget.Config{Now: clk.Now, Redis: deadRedis(t), KeyService: deadKeyService(t)})
		st, err := fresh.Check(context.Background(), uuid.New(), dec("10"))
		if err == nil {
			t.Fatalf("Check = %+v, want an error", st)
		}
		if got := fresh.count(t, "ccproxy_extproc_budget_dependency_errors_total", "rpc"); got != 1 {
			t.Fatalf("rpc errors = %v", got)
		}
	})
	t.Run("a stale value does not cross into the next month", func(t *testing.T) {
		clk2 := &clock{now: time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC)}
		e2 := newEnv(t, time.UTC)
		user := e2.newUser(t)
		e2.spend(t, user, clk2.now.Add(-time.Hour), "50")
		rdb2 := redis.NewClient(&redis.Options{Addr: e2.rdb.Options().Addr, DB: e2.rdb.Options().DB, Password: e2.rdb.Options().Password})
		c2 := e2.checker(t, budget.Config{Now: clk2.Now, Redis: rdb2})
		if st := mustCheck(t, c2, user, "10"); !st.Over {
			t.Fatalf("status = %+v", st)
		}
		rdb2.Close()
		e2.srv.Stop()
		clk2.Add(2 * time.Minute) // April: last month's spend says nothing
		if st, err := c2.Check(context.Background(), user, dec("10")); err == nil {
			t.Fatalf("Check = %+v, want an error", st)
		}
	})
}

func TestResetAtAndMonthInBillingZone(t *testing.T) {
	la, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		t.Fatal(err)
	}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		loc   *time.Location
		now   time.Time
		month string
		reset time.Time
		spent string
	}{
		// 03:00 UTC on Apr 1 is still Mar 31 (20:00 PDT) in Los Angeles.
		{"los angeles, still march", la, time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC), "2026-03",
			time.Date(2026, 4, 1, 7, 0, 0, 0, time.UTC), "3.5"},
		{"los angeles, april", la, time.Date(2026, 4, 1, 7, 0, 0, 0, time.UTC), "2026-04",
			time.Date(2026, 5, 1, 7, 0, 0, 0, time.UTC), "2"},
		// Daylight saving starts on Mar 8, so March begins at 00:00 PST,
		// 08:00 UTC.
		{"los angeles, february", la, time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC), "2026-02",
			time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC), "0"},
		// 20:00 UTC on Mar 31 is already Apr 1 (01:30 IST) in Kolkata.
		{"kolkata, april", kolkata, time.Date(2026, 3, 31, 20, 0, 0, 0, time.UTC), "2026-04",
			time.Date(2026, 4, 30, 18, 30, 0, 0, time.UTC), "4"},
		{"kolkata, march", kolkata, time.Date(2026, 3, 31, 18, 29, 0, 0, time.UTC), "2026-03",
			time.Date(2026, 3, 31, 18, 30, 0, 0, time.UTC), "1.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.loc)
			user := e.newUser(t)
			// March everywhere; April in Kolkata only; April everywhere.
			e.spend(t, user, time.Date(2026, 3, 31, 18, 0, 0, 0, time.UTC), "1.5")
			e.spend(t, user, time.Date(2026, 3, 31, 19, 0, 0, 0, time.UTC), "2")
			e.spend(t, user, time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC), "2")
			clk := &clock{now: tc.now}
			c := e.checker(t, budget.Config{Now: clk.Now})
			st := mustCheck(t, c, user, "100")
			if !st.ResetAt.Equal(tc.reset) || !st.Spent.Equal(dec(tc.spent)) {
				t.Fatalf("status = %+v, want reset %v and spent %s", st, tc.reset, tc.spent)
			}
			if n, err := e.rdb.Exists(context.Background(), e.counterKey(user, tc.month)).Result(); err != nil || n != 1 {
				t.Fatalf("counter for %s: exists = %d, %v", tc.month, n, err)
			}
		})
	}
}

// countingClient counts MonthlySpend calls and holds them until released.
type countingClient struct {
	keyservicev1.KeyServiceClient
	calls atomic.Int32
	gate  chan struct{}
}

func (c *countingClient) MonthlySpend(ctx context.Context, in *keyservicev1.MonthlySpendRequest, opts ...grpc.CallOption) (*keyservicev1.MonthlySpendResponse, error) {
	c.calls.Add(1)
	<-c.gate
	return c.KeyServiceClient.MonthlySpend(ctx, in, opts...)
}

// getCounter counts Redis GETs.
type getCounter struct{ n atomic.Int32 }

func (*getCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *getCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "get") {
			g.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (*getCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Where checks and the gated lookup block, for parked.Wait.
const (
	checkFunc        = "github.com/ccproxy/ccproxy/extproc/budget.(*Checker).Check"
	monthlySpendFunc = "github.com/ccproxy/ccproxy/extproc/budget_test.(*countingClient).MonthlySpend"
)

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "2")
	rdb := redis.NewClient(&redis.Options{Addr: e.rdb.Options().Addr, DB: e.rdb.Options().DB, Password: e.rdb.Options().Password})
	t.Cleanup(func() { rdb.Close() })
	gets := &getCounter{}
	rdb.AddHook(gets)
	ks := &countingClient{KeyServiceClient: e.client, gate: make(chan struct{})}
	clk := &clock{now: mar15}
	c := e.checker(t, budget.Config{Now: clk.Now, Redis: rdb, KeyService: ks})

	const n = 20
	var started, wg sync.WaitGroup
	started.Add(n)
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			started.Done()
			st, err := c.Check(context.Background(), user, dec("1"))
			if err == nil && (!st.Spent.Equal(dec("2")) || !st.Over) {
				err = errors.New("wrong status")
			}
			errs <- err
		})
	}
	started.Wait()
	// Every check waits for the one lookup the gate holds: had any of them
	// started another, the counts below would show it.
	parked.Wait(t, n, "select", checkFunc)
	close(ks.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := ks.calls.Load(); got != 1 {
		t.Fatalf("MonthlySpend calls = %d, want 1", got)
	}
	if got := gets.n.Load(); got != 1 {
		t.Fatalf("redis GETs = %d, want 1", got)
	}
}

func TestCanceledCallerDoesNotFailOthers(t *testing.T) {
	e := newEnv(t, time.UTC)
	user := e.newUser(t)
	e.spend(t, user, mar15.Add(-time.Hour), "2")
	ks := &countingClient{KeyServiceClient: e.client, gate: make(chan struct{})}
	clk := &clock{now: mar15}
	c := e.checker(t, budget.Config{Now: clk.Now, KeyService: ks})

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Check(ctx, user, dec("10"))
		first <- err
	}()
	parked.Wait(t, 1, "chan receive", monthlySpendFunc) // the first check's lookup, at the gate
	second := make(chan error, 1)
	go func() {
		st, err := c.Check(context.Background(), user, dec("10"))
		if err == nil && !st.Spent.Equal(dec("2")) {
			err = errors.New("wrong spend")
		}
		second <- err
	}()
	parked.Wait(t, 2, "select", checkFunc) // both checks wait for that lookup
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled check: err = %v", err)
	}
	close(ks.gate)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

func TestNewRequiresDependencies(t *testing.T) {
	if _, err := budget.New(budget.Config{}); err == nil {
		t.Fatal("New without Redis and KeyService succeeded")
	}
}
