package controlplane

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// served returns the cluster names and the BedrockConfig of the snapshot srv serves.
func served(t *testing.T, srv *Server) (clusters []string, cfg *runtimev1.BedrockConfig) {
	t.Helper()
	snap, err := srv.cache.GetSnapshot(NodeKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range snap.GetResources(resource.ClusterType) {
		if _, ok := r.(*clusterv3.Cluster); !ok {
			t.Fatalf("cluster %s is a %T", name, r)
		}
		clusters = append(clusters, name)
	}
	slices.Sort(clusters)
	ext, ok := snap.GetResources(resource.ExtensionConfigType)[RuntimeBedrockName].(*corev3.TypedExtensionConfig)
	if !ok {
		t.Fatalf("snapshot lacks %s", RuntimeBedrockName)
	}
	cfg = &runtimev1.BedrockConfig{}
	if err := ext.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	return clusters, cfg
}

func modelIDs(cfg *runtimev1.BedrockConfig) []string {
	var ids []string
	for _, m := range cfg.GetModels() {
		ids = append(ids, m.GetAnthropicModelId())
	}
	return ids
}

func addCredential(t *testing.T, st *store.Store, name, region string) {
	t.Helper()
	ctx := context.Background()
	u, err := st.Users().Create(ctx, store.NewUser{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credentials().PutForUser(ctx, u.ID, store.CredentialInput{Kind: store.CredentialAWSDefaultChain, Region: region}); err != nil {
		t.Fatal(err)
	}
}

// listenPID returns the backend pid of the watcher's LISTEN connection, 0 if none.
func listenPID(t *testing.T, st *store.Store) int32 {
	t.Helper()
	var pids []int32
	rows, err := st.Pool().Query(context.Background(),
		`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`, listenApplicationName)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) > 1 {
		t.Fatalf("%d LISTEN connections, want at most 1", len(pids))
	}
	if len(pids) == 0 {
		return 0
	}
	return pids[0]
}

func TestDatabaseOptions(t *testing.T) {
	st := storetest.Open(t)
	ctx := context.Background()
	addCredential(t, st, "a", "us-west-2")
	addCredential(t, st, "b", "eu-central-1")
	// Region-shaped for the table's check, too long for a cluster name: stored, never served.
	addCredential(t, st, "c", "us-"+strings.Repeat("x", 40)+"-1")
	if _, err := st.Models().Create(ctx, store.NewModelMapping{
		AnthropicModelID: "claude-test-1", Family: "test", BedrockModelID: "anthropic.claude-test-1-v1:0",
		Regions: map[string]string{"": "global.anthropic.claude-test-1-v1:0"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Models().Create(ctx, store.NewModelMapping{
		AnthropicModelID: "claude-off-1", Family: "test", BedrockModelID: "anthropic.claude-off-1-v1:0", Disabled: true,
	}); err != nil {
		t.Fatal(err)
	}
	base := productionOptions
	base.Bedrock = &runtimev1.BedrockConfig{ProfileRuleFallback: true, Regions: []string{"ignored-1"}}
	opts, err := DatabaseOptions(ctx, st, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"eu-central-1", "us-west-2"}; !slices.Equal(opts.BedrockRegions, want) {
		t.Errorf("BedrockRegions = %v, want %v", opts.BedrockRegions, want)
	}
	ids := modelIDs(opts.Bedrock)
	if !slices.Contains(ids, "claude-test-1") || slices.Contains(ids, "claude-off-1") {
		t.Errorf("models = %v, want claude-test-1 and no disabled mapping", ids)
	}
	if !opts.Bedrock.GetProfileRuleFallback() {
		t.Error("base.Bedrock's flags were not kept")
	}
	if len(base.Bedrock.GetModels()) != 0 {
		t.Error("DatabaseOptions modified base.Bedrock")
	}
	// The result builds, and the served regions come from BedrockRegions.
	r, err := BuildResources(opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &runtimev1.BedrockConfig{}
	if err := r.ExtensionConfigs[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	if want := []string{"eu-central-1", "us-west-2"}; !slices.Equal(cfg.GetRegions(), want) {
		t.Errorf("served regions = %v, want %v", cfg.GetRegions(), want)
	}
}

// TestWatchDatabase runs the watcher against a real Postgres: changes reach the snapshot via
// NOTIFY, and after the LISTEN connection is killed the watcher reconnects and catches up.
func TestWatchDatabase(t *testing.T) {
	st := storetest.Open(t)
	addCredential(t, st, "first", "us-east-1")
	srv, err := NewServer(productionOptions, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- WatchDatabase(ctx, st, productionOptions, srv, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchDatabase returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("WatchDatabase did not return after cancel")
		}
	})
	hasCluster := func(name string) func() bool {
		return func() bool {
			clusters, _ := served(t, srv)
			return slices.Contains(clusters, name)
		}
	}

	eventually(t, "the initial load (bedrock-us-east-1)", hasCluster("bedrock-us-east-1"))
	eventually(t, "the LISTEN connection", func() bool { return listenPID(t, st) != 0 })

	t.Run("a credential in a new region adds its cluster", func(t *testing.T) {
		addCredential(t, st, "second", "eu-west-3")
		eventually(t, "bedrock-eu-west-3", hasCluster("bedrock-eu-west-3"))
		_, cfg := served(t, srv)
		if want := []string{"eu-west-3", "us-east-1"}; !slices.Equal(cfg.GetRegions(), want) {
			t.Errorf("runtime regions = %v, want %v", cfg.GetRegions(), want)
		}
	})

	t.Run("a new model mapping reaches the runtime config", func(t *testing.T) {
		if _, err := st.Models().Create(context.Background(), store.NewModelMapping{
			AnthropicModelID: "claude-watch-1", Family: "test", BedrockModelID: "anthropic.claude-watch-1-v1:0",
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "claude-watch-1 in the runtime config", func() bool {
			_, cfg := served(t, srv)
			return slices.Contains(modelIDs(cfg), "claude-watch-1")
		})
	})

	t.Run("reconnects after the LISTEN connection is killed", func(t *testing.T) {
		old := listenPID(t, st)
		var killed bool
		if err := st.Pool().QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, old).Scan(&killed); err != nil || !killed {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", old, killed, err)
		}
		// Made while the watcher may be disconnected: the reload after reconnecting finds it.
		addCredential(t, st, "third", "ap-northeast-1")
		eventually(t, "a new LISTEN connection", func() bool {
			pid := listenPID(t, st)
			return pid != 0 && pid != old
		})
		eventually(t, "bedrock-ap-northeast-1", hasCluster("bedrock-ap-northeast-1"))
		// And notifications work on the new connection.
		addCredential(t, st, "fourth", "sa-east-1")
		eventually(t, "bedrock-sa-east-1", hasCluster("bedrock-sa-east-1"))
	})

	t.Run("a deleted credential removes its cluster", func(t *testing.T) {
		if _, err := st.Pool().Exec(context.Background(), `DELETE FROM bedrock_credentials WHERE region = 'sa-east-1'`); err != nil {
			t.Fatal(err)
		}
		eventually(t, "bedrock-sa-east-1 to go", func() bool { return !hasCluster("bedrock-sa-east-1")() })
	})
}
