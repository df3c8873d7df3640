package store_test

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/jackc/pgx/v5"
)

var wantMigrations = []string{
	"00001_core.sql",
	"00002_models.sql",
	"00003_prices.sql",
	"00004_usage.sql",
	"00005_admin.sql",
	"00006_bedrock_regional_prices.sql",
	"00007_usage_hourly_all.sql",
	"00008_dashboard_rollups.sql",
	"00009_usage_fallback_hourly.sql",
	"00010_admin_login_throttle.sql",
	"00011_usage_user_rollup.sql",
	"00012_usage_agent_tree.sql",
	"00013_rate_limits.sql",
	"00014_plan_headroom.sql",
	"00015_admin_roles.sql",
	"00016_webhooks.sql",
	"00017_teams_budgets.sql",
	"00018_prices_notify.sql",
}

// publicTables lists the ordinary and partitioned tables of the public schema.
func publicTables(t *testing.T, dsn string) []string {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY relname`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func statusNames(t *testing.T, st []store.MigrationState, applied bool) []string {
	t.Helper()
	var names []string
	for _, s := range st {
		if s.Applied != applied {
			continue
		}
		if s.Applied == s.AppliedAt.IsZero() {
			t.Errorf("%s: applied=%v but applied_at=%v", s.Name, s.Applied, s.AppliedAt)
		}
		names = append(names, s.Name)
	}
	return names
}

func TestMigrateUpDownUp(t *testing.T) {
	ctx := testCtx(t)
	dsn := testenv.Postgres(t)

	st, err := store.MigrationStatus(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if got := statusNames(t, st, false); !slices.Equal(got, wantMigrations) {
		t.Fatalf("pending before up = %v, want %v", got, wantMigrations)
	}

	res, err := store.MigrateUp(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(wantMigrations) || res[0].Direction != "up" || res[0].Version != 1 || res[0].Name != wantMigrations[0] {
		t.Fatalf("up results = %+v", res)
	}
	wantTables := []string{
		"access_keys", "admin_login_throttle", "admin_oidc_flows", "admin_sessions", "admins", "audit_log", "bedrock_credentials", "budget_alerts", "budgets", "goose_db_version",
		"model_aliases", "model_mappings", "model_regions", "notification_events", "plan_headroom", "prices", "rate_limits", "teams", "usage_daily", "usage_dedupe",
		"usage_events", "usage_events_default", "usage_fallback_hourly", "usage_hourly", "usage_hourly_all",
		"usage_user_rollup", "users", "webhook_deliveries", "webhook_delivery_attempts", "webhooks",
	}
	if got := publicTables(t, dsn); !slices.Equal(got, wantTables) {
		t.Fatalf("tables after up = %v\nwant %v", got, wantTables)
	}
	st, err = store.MigrationStatus(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if got := statusNames(t, st, true); !slices.Equal(got, wantMigrations) {
		t.Fatalf("applied after up = %v", got)
	}
	if res, err := store.MigrateUp(ctx, dsn); err != nil || len(res) != 0 {
		t.Fatalf("second up = %v, %v; want nothing to do", res, err)
	}

	// One step down rolls back only the newest migration.
	res, err = store.MigrateDown(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	// Migration numbers may have gaps: the newest is the last file's.
	newest, err := strconv.ParseInt(wantMigrations[len(wantMigrations)-1][:5], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Version != newest || res[0].Direction != "down" {
		t.Fatalf("down results = %+v", res)
	}
	st, err = store.MigrationStatus(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if got := statusNames(t, st, false); !slices.Equal(got, wantMigrations[len(wantMigrations)-1:]) {
		t.Fatalf("pending after down = %v", got)
	}

	// Down to zero removes everything but goose's own table.
	res, err = store.MigrateDownTo(ctx, dsn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(wantMigrations)-1 {
		t.Fatalf("down-to-0 rolled back %d migrations, want %d (the newest was already down)", len(res), len(wantMigrations)-1)
	}
	if got := publicTables(t, dsn); !slices.Equal(got, []string{"goose_db_version"}) {
		t.Fatalf("tables after down to 0 = %v", got)
	}
	if res, err := store.MigrateDown(ctx, dsn); err != nil || len(res) != 0 {
		t.Fatalf("down at version 0 = %v, %v; want nothing to do", res, err)
	}

	// And up again on the emptied database.
	if res, err := store.MigrateUp(ctx, dsn); err != nil || len(res) != len(wantMigrations) {
		t.Fatalf("up again = %d results, %v", len(res), err)
	}
	if got := publicTables(t, dsn); !slices.Equal(got, wantTables) {
		t.Fatalf("tables after second up = %v", got)
	}
}

// Two replicas migrating at once: the advisory lock serialises them, so both
// succeed and every migration is applied once.
func TestMigrateConcurrent(t *testing.T) {
	ctx := testCtx(t)
	dsn := testenv.Postgres(t)
	var wg sync.WaitGroup
	results := make([][]store.MigrationResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = store.MigrateUp(ctx, dsn)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := len(results[0]) + len(results[1]); n != len(wantMigrations) {
		t.Fatalf("applied %d + %d migrations, want %d in all", len(results[0]), len(results[1]), len(wantMigrations))
	}
}

func TestCheckSchema(t *testing.T) {
	ctx := testCtx(t)
	if err := testStore.CheckSchema(ctx); err != nil {
		t.Fatalf("migrated database: %v", err)
	}
	dsn := testenv.Postgres(t)
	if _, err := store.MigrateUp(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if _, err := store.MigrateDown(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CheckSchema(ctx); !errors.Is(err, store.ErrSchemaOutdated) {
		t.Fatalf("CheckSchema one migration behind = %v, want ErrSchemaOutdated", err)
	}
}
