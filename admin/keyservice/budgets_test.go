package keyservice

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	"github.com/ccproxy/ccproxy/internal/testenv"
	keyservicev1 "github.com/ccproxy/ccproxy/proto/ccproxy/keyservice/v1"
)

func TestBudgetsOverGRPC(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	rdb, prefix := testenv.Redis(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// Tuesday 2026-12-08 00:30 in Paris.
	now := time.Date(2026, 12, 7, 23, 30, 0, 0, time.UTC)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(st, Options{Redis: rdb, RedisPrefix: prefix, Location: paris, Now: func() time.Time { return now }}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := keyservicev1.NewKeyServiceClient(conn)

	hasher, err := keys.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	user, err := st.Users().Create(ctx, store.NewUser{Name: "budgeted"})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.Generate()
	ak, err := st.AccessKeys().Create(ctx, store.NewAccessKey{UserID: user.ID, Name: "k", Hash: hasher.Hash(k), Prefix: keys.DisplayPrefix(k)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Budgets().Create(ctx, store.Budget{Scope: "user", SubjectID: user.ID, Window: "daily", Metric: "all",
		AmountUSD: decimal.RequireFromString("0.5"), Thresholds: []int{100}, Action: "downgrade",
		Downgrade: map[string]string{"opus": "claude-sonnet-4-5"}}); err != nil {
		t.Fatal(err)
	}
	// The team's plan_budget_usd is a budget row: its id is the row's.
	seven := decimal.NewFromInt(7)
	tm, err := st.Teams().Create(ctx, store.NewTeam{Name: "ks-team", PlanBudgetUSD: &seven, PlanBudgetEnforced: true})
	if err != nil {
		t.Fatal(err)
	}
	team := tm.ID.String()
	teamBudgets, err := st.Budgets().List(ctx, store.BudgetScopeTeam, tm.ID)
	if err != nil || len(teamBudgets) != 1 {
		t.Fatalf("team budgets %+v, %v", teamBudgets, err)
	}
	if _, err := st.Pool().Exec(ctx, `UPDATE users SET team_id = $1 WHERE id = $2`, team, user.ID); err != nil {
		t.Fatal(err)
	}

	resp, err := client.LookupKey(ctx, &keyservicev1.LookupKeyRequest{KeyHash: hasher.Hash(k)})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ id, scope, subject, window, metric, amount, action, downgrade, start, end, counter string }
	var got []row
	for _, b := range resp.GetBudgets() {
		got = append(got, row{b.GetId(), b.GetScope(), b.GetSubjectId(), b.GetWindow(), b.GetMetric(), b.GetAmountUsd(), b.GetAction(),
			b.GetDowngrade()["opus"], b.GetWindowStart().AsTime().Format(time.RFC3339), b.GetWindowEnd().AsTime().Format(time.RFC3339), b.GetCounterKey()})
	}
	want := []row{
		{teamBudgets[0].ID.String(), "team", team, "monthly", "plan_list", "7.00", "block", "", "2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z",
			prefix + "budget:team:" + team + ":plan_list:monthly:2026-12-01"},
		{got[1].id, "user", user.ID.String(), "daily", "all", "0.50", "downgrade", "claude-sonnet-4-5", "2026-12-07T23:00:00Z", "2026-12-08T23:00:00Z",
			prefix + "budget:user:" + user.ID.String() + ":all:daily:2026-12-08"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("budgets =\n%+v\nwant\n%+v", got, want)
	}

	// BudgetSpend recomputes the window (Paris day 2026-12-08) and sets the counter.
	events := []store.UsageEvent{
		spendEvent("bs-before", user.ID, store.ProviderBedrock, time.Date(2026, 12, 7, 22, 59, 0, 0, time.UTC), "100"),
		spendEvent("bs-bedrock", user.ID, store.ProviderBedrock, time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC), "0.25"),
		spendEvent("bs-plan", user.ID, store.ProviderAnthropic, time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC), "0.125"),
	}
	events[1].AccessKeyID = ak.ID
	if _, err := st.Usage().InsertEvents(ctx, events); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		scope, subject, metric, want string
	}{
		{"user", user.ID.String(), "all", "0.375000"},
		{"user", user.ID.String(), "bedrock", "0.250000"},
		{"key", ak.ID.String(), "all", "0.250000"},
		{"team", team, "plan_list", "0.125000"},
	} {
		r, err := client.BudgetSpend(ctx, &keyservicev1.BudgetSpendRequest{Scope: tc.scope, SubjectId: tc.subject, Metric: tc.metric, Window: "daily", WindowStart: "2026-12-08"})
		if err != nil || r.GetSpendUsd() != tc.want {
			t.Fatalf("BudgetSpend(%s, %s) = %q, %v; want %s", tc.scope, tc.metric, r.GetSpendUsd(), err, tc.want)
		}
		key := prefix + "budget:" + tc.scope + ":" + tc.subject + ":" + tc.metric + ":daily:2026-12-08"
		if v, err := rdb.Get(ctx, key).Result(); err != nil || v != tc.want {
			t.Fatalf("counter %s = %q, %v; want %s", key, v, err, tc.want)
		}
	}
	for _, bad := range []*keyservicev1.BudgetSpendRequest{
		{Scope: "org", SubjectId: team, Metric: "all", Window: "daily", WindowStart: "2026-12-08"},
		{Scope: "team", SubjectId: "x", Metric: "all", Window: "daily", WindowStart: "2026-12-08"},
		{Scope: "team", SubjectId: team, Metric: "cost", Window: "daily", WindowStart: "2026-12-08"},
		{Scope: "team", SubjectId: team, Metric: "all", Window: "weekly", WindowStart: "2026-12-08"},
	} {
		if _, err := client.BudgetSpend(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("BudgetSpend(%v) = %v; want InvalidArgument", bad, err)
		}
	}
}
