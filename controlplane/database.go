package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/ccproxy/ccproxy/internal/store"
	runtimev1 "github.com/ccproxy/ccproxy/proto/ccproxy/runtime/v1"
)

// Timing of the Postgres source.
const (
	// dbDebounce coalesces the notifications of one admin action: a mapping's row, aliases
	// and regions are separate statements, each of which notifies.
	dbDebounce = 200 * time.Millisecond
	// dbBackoffMin and dbBackoffMax bound the wait before reconnecting the LISTEN
	// connection; it doubles on each failure in a row.
	dbBackoffMin = 250 * time.Millisecond
	dbBackoffMax = 30 * time.Second
	// dbResync reloads even without a notification. Soft-deleting a user can remove a region
	// (RegionsInUse skips deleted users) and the users table does not notify.
	dbResync = 5 * time.Minute
	// dbCloseTimeout bounds the polite Terminate message when the LISTEN connection closes.
	dbCloseTimeout = 5 * time.Second
	// listenApplicationName marks the LISTEN connection in pg_stat_activity.
	listenApplicationName = "ccproxy-controlplane-listen"
)

// DatabaseOptions returns base with its Bedrock part read from Postgres: BedrockRegions are
// the regions of the Bedrock credentials in use, and Bedrock is base.Bedrock (its tables and
// flags) with the enabled model mappings and the rate card (the prices in effect now or later,
// with every mapping's names, which the price lookup resolves). A region or mapping the control plane cannot serve
// is skipped and logged on log (may be nil), so one bad row does not hold back every other
// change.
func DatabaseOptions(ctx context.Context, st *store.Store, base Options, log *slog.Logger) (Options, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	regions, err := st.Credentials().RegionsInUse(ctx)
	if err != nil {
		return Options{}, err
	}
	models, err := st.Models().ListEnabled(ctx)
	if err != nil {
		return Options{}, err
	}
	allModels, err := st.Models().List(ctx)
	if err != nil {
		return Options{}, err
	}
	now := time.Now()
	prices, err := st.Prices().List(ctx, store.PriceFilter{EndsAfter: &now})
	if err != nil {
		return Options{}, err
	}
	opts := base
	opts.BedrockRegions = make([]string, 0, len(regions))
	for _, r := range regions {
		if err := CheckRegion(r); err != nil {
			log.LogAttrs(ctx, slog.LevelError, "bedrock credential region skipped", slog.String("region", r), slog.String("error", err.Error()))
			continue
		}
		opts.BedrockRegions = append(opts.BedrockRegions, r)
	}
	cfg := &runtimev1.BedrockConfig{}
	if base.Bedrock != nil {
		cfg = proto.Clone(base.Bedrock).(*runtimev1.BedrockConfig)
	}
	cfg.Models = make([]*runtimev1.ModelMapping, 0, len(models))
	for _, m := range models {
		pm := ModelMappingProto(m)
		if err := checkModelMapping(pm); err != nil {
			log.LogAttrs(ctx, slog.LevelError, "model mapping skipped", slog.String("model", m.AnthropicModelID), slog.String("error", err.Error()))
			continue
		}
		cfg.Models = append(cfg.Models, pm)
	}
	cfg.Prices = PriceCardProto(prices, allModels)
	opts.Bedrock = cfg
	return opts, nil
}

// WatchDatabase keeps srv's configuration in step with Postgres until ctx is cancelled, then
// returns nil. It LISTENs on store.ConfigChannel (the triggers on bedrock_credentials and the
// model tables notify it), loads DatabaseOptions(base) and calls srv.Update, and reloads
// after each burst of notifications (debounced by 200 ms) and every few minutes. When the
// LISTEN connection fails it keeps serving the last configuration, reconnects with
// exponential backoff and reloads once listening again, so no change made while it was
// disconnected is lost. The LISTEN connection is a dedicated one, not taken from st's pool.
func WatchDatabase(ctx context.Context, st *store.Store, base Options, srv *Server, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &dbWatcher{st: st, base: base, srv: srv, log: log}
	backoff := dbBackoffMin
	for {
		listened, err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = dbBackoffMin
		}
		log.LogAttrs(ctx, slog.LevelWarn, "config database connection lost; reconnecting",
			slog.String("error", err.Error()), slog.Duration("retry_in", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, dbBackoffMax)
	}
}

type dbWatcher struct {
	st   *store.Store
	base Options
	srv  *Server
	log  *slog.Logger
}

// errLoad marks a failed database read: the session ends and reconnects, which retries it.
var errLoad = errors.New("load configuration")

// reload reads the database and updates the server. A configuration the server refuses is
// logged and skipped: retrying cannot help until the data changes (which notifies).
func (w *dbWatcher) reload(ctx context.Context) error {
	opts, err := DatabaseOptions(ctx, w.st, w.base, w.log)
	if err != nil {
		return fmt.Errorf("%w: %w", errLoad, err)
	}
	if err := w.srv.Update(ctx, opts); err != nil {
		w.log.LogAttrs(ctx, slog.LevelError, "configuration from the database refused; still serving the previous one", slog.String("error", err.Error()))
		return nil
	}
	w.log.LogAttrs(ctx, slog.LevelDebug, "configuration loaded from the database",
		slog.Int("bedrock_regions", len(opts.BedrockRegions)), slog.Int("model_mappings", len(opts.Bedrock.GetModels())),
		slog.String("version", w.srv.Version()))
	return nil
}

// session connects, LISTENs, loads, and then reloads on notifications until the connection
// or a load fails (returning the error) or ctx ends. listened reports whether it got as far
// as listening with a loaded configuration.
func (w *dbWatcher) session(ctx context.Context) (listened bool, err error) {
	cfg := w.st.Pool().Config().ConnConfig.Copy()
	params := maps.Clone(cfg.RuntimeParams)
	if params == nil {
		params = map[string]string{}
	}
	params["application_name"] = listenApplicationName
	cfg.RuntimeParams = params
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	// The notification goroutine below owns conn until it has returned (a pgx.Conn is not
	// safe for concurrent use), so closing waits for it.
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() {
		stop()
		<-done
		cctx, cancel := context.WithTimeout(context.Background(), dbCloseTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// LISTEN before loading: a change committed after the load's snapshot is then always
	// followed by a notification.
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{store.ConfigChannel}.Sanitize()); err != nil {
		close(done)
		return false, fmt.Errorf("listen: %w", err)
	}
	notes := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				errc <- fmt.Errorf("wait for notification: %w", err)
				return
			}
			w.log.LogAttrs(lctx, slog.LevelDebug, "configuration change notified", slog.String("table", n.Payload))
			select {
			case notes <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()
	if err := w.reload(ctx); err != nil {
		return false, err
	}
	w.log.LogAttrs(ctx, slog.LevelInfo, "watching the database for configuration changes", slog.String("channel", store.ConfigChannel))
	resync := time.NewTicker(dbResync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-errc:
			return true, err
		case <-resync.C:
		case <-notes:
			debounce := time.NewTimer(dbDebounce)
			select {
			case <-ctx.Done():
				debounce.Stop()
				return true, ctx.Err()
			case err := <-errc:
				debounce.Stop()
				return true, err
			case <-debounce.C:
			}
			// Notifications that arrived while waiting are covered by this reload.
			select {
			case <-notes:
			default:
			}
		}
		if err := w.reload(ctx); err != nil {
			return true, err
		}
	}
}
