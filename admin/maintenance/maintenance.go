// Package maintenance is the admin service's periodic housekeeping of the
// database. A Job runs one pass at start and then every Interval (an hour by
// default):
//
//   - usage partitions: the monthly usage_events partitions of the current
//     and the next UTC month are created if missing, so a month's table
//     exists before its first event;
//   - usage retention: when Retention is set (CCPROXY_USAGE_RETENTION, in
//     months), the raw-event partitions of months that ended before the
//     start of the month Retention months ago are dropped, with their
//     request ids in usage_dedupe. The hourly and daily rollups are kept
//     forever, so dashboards, summaries and budgets over old months still
//     work; only per-request listings and session summaries lose the
//     dropped months;
//   - admin sessions that expired or were revoked are deleted, and so is
//     login throttling state that was forgotten;
//   - Plan headroom samples older than store.HeadroomRetention (35 days)
//     are deleted, which bounds plan_headroom;
//   - access keys whose rotation grace period has ended are revoked (and,
//     when Invalidate is set, extproc caches are told to forget them).
//
// Every admin replica runs a Job; a Postgres advisory lock makes sure only
// one of them runs a pass at a time (the others skip that tick). Each task
// is idempotent, so a pass cut short is simply completed by the next.
//
// Metrics (Prometheus): ccproxy_maintenance_last_success_timestamp_seconds,
// ccproxy_maintenance_passes_total{result}, ccproxy_maintenance_errors_total{task},
// ccproxy_usage_partitions_dropped_total,
// ccproxy_admin_sessions_deleted_total and ccproxy_access_keys_expired_total.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/internal/store"
)

// DefaultInterval is the time between two passes.
const DefaultInterval = time.Hour

// LockID is the Postgres advisory lock (pg_try_advisory_lock, session level)
// held during a pass. It is scoped to the ccproxy database.
const LockID int64 = 0x63637078_6d61696e // "ccpxmain"

// Options configure a Job.
type Options struct {
	// Store is the ccproxy database. Required.
	Store *store.Store
	// Retention is how many whole months of raw usage events to keep before
	// the current one; 0 keeps them forever. With 13, on any day of
	// November 2026 the events from October 2025 on are kept.
	Retention int
	// Interval is the time between passes; DefaultInterval when zero.
	Interval time.Duration
	// Invalidate, when set, is called with the hashes of keys whose
	// rotation grace ended, so extproc instances drop their cached copies.
	// (They would refuse them anyway: a rotating key is only usable before
	// its grace_until.)
	Invalidate func(ctx context.Context, keyHashes ...[]byte) error
	// Logger receives a line per pass that changed something and per error.
	Logger *slog.Logger
	// Registerer receives the Job's metrics when set.
	Registerer prometheus.Registerer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Job is the maintenance loop. Create it with New.
type Job struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	lastSuccess       prometheus.Gauge
	passes            *prometheus.CounterVec
	errors            *prometheus.CounterVec
	partitionsDropped prometheus.Counter
	sessionsDeleted   prometheus.Counter
	keysExpired       prometheus.Counter
}

// Result is what one pass did.
type Result struct {
	// Ran is false when another replica held the lock and this pass did
	// nothing.
	Ran bool
	// Dropped lists the months whose raw usage partitions were dropped.
	Dropped []time.Time
	// SessionsDeleted, ThrottlesDeleted, HeadroomDeleted and KeysExpired
	// count the rows cleaned up.
	SessionsDeleted  int
	ThrottlesDeleted int
	HeadroomDeleted  int64
	KeysExpired      int
}

// New returns a Job for opts and registers its metrics.
func New(opts Options) (*Job, error) {
	if opts.Store == nil {
		return nil, errors.New("maintenance: Store is required")
	}
	if opts.Retention < 0 {
		return nil, fmt.Errorf("maintenance: negative retention %d", opts.Retention)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	j := &Job{
		opts: opts, log: opts.Logger, now: opts.Now,
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccproxy_maintenance_last_success_timestamp_seconds",
			Help: "Unix time at which this replica last completed a maintenance pass without errors.",
		}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_maintenance_passes_total",
			Help: "Maintenance passes by result: ok, error, or skipped (another replica held the lock).",
		}, []string{"result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccproxy_maintenance_errors_total",
			Help: "Maintenance task failures by task (lock, partitions, retention, sessions, keys).",
		}, []string{"task"}),
		partitionsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_usage_partitions_dropped_total",
			Help: "Monthly usage_events partitions dropped by the retention job.",
		}),
		sessionsDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_admin_sessions_deleted_total",
			Help: "Expired or revoked admin sessions deleted.",
		}),
		keysExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccproxy_access_keys_expired_total",
			Help: "Rotating access keys revoked because their grace period ended.",
		}),
	}
	for _, r := range []string{"ok", "error", "skipped"} {
		j.passes.WithLabelValues(r)
	}
	for _, t := range []string{"lock", "partitions", "retention", "sessions", "keys"} {
		j.errors.WithLabelValues(t)
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	if j.now == nil {
		j.now = time.Now
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{j.lastSuccess, j.passes, j.errors, j.partitionsDropped, j.sessionsDeleted, j.keysExpired} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("maintenance: register metrics: %w", err)
			}
		}
	}
	return j, nil
}

// Run runs a pass now and then every Interval until ctx ends; it returns nil
// then. A failed pass is logged and counted, and the next tick tries again.
func (j *Job) Run(ctx context.Context) error {
	j.log.Info("maintenance running", "interval", j.opts.Interval.String(), "usage_retention_months", j.opts.Retention)
	t := time.NewTicker(j.opts.Interval)
	defer t.Stop()
	for {
		if _, err := j.RunOnce(ctx); err != nil && ctx.Err() == nil {
			j.log.Error("maintenance pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RetentionBoundary is the start of the UTC month Retention months before
// now's: raw usage events before it are dropped. The zero time when
// retention is off.
func RetentionBoundary(now time.Time, months int) time.Time {
	if months <= 0 {
		return time.Time{}
	}
	now = now.UTC()
	return time.Date(now.Year(), now.Month()-time.Month(months), 1, 0, 0, 0, 0, time.UTC)
}

// RunOnce runs one pass unless another replica is running one. Every task
// is attempted even if an earlier one failed; the error joins the failures.
func (j *Job) RunOnce(ctx context.Context) (Result, error) {
	var res Result
	conn, err := j.opts.Store.Pool().Acquire(ctx)
	if err != nil {
		j.fail("lock")
		return res, fmt.Errorf("maintenance: acquire connection: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, LockID).Scan(&locked); err != nil {
		j.fail("lock")
		return res, fmt.Errorf("maintenance: advisory lock: %w", err)
	}
	if !locked {
		j.passes.WithLabelValues("skipped").Inc()
		j.log.Debug("maintenance pass skipped: another replica holds the lock")
		return res, nil
	}
	defer func() {
		// The lock is the session's: if unlocking fails, close the
		// connection rather than return it to the pool still locked.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, LockID); err != nil {
			_ = conn.Conn().Close(uctx)
		}
	}()
	res.Ran = true

	now := j.now()
	usage := j.opts.Store.Usage()
	var errs []error
	if err := usage.EnsurePartitions(ctx, now); err != nil {
		j.fail("partitions")
		errs = append(errs, err)
	}
	if boundary := RetentionBoundary(now, j.opts.Retention); !boundary.IsZero() {
		dropped, err := j.dropBefore(ctx, boundary)
		if err != nil {
			j.fail("retention")
			errs = append(errs, err)
		}
		res.Dropped = dropped
		j.partitionsDropped.Add(float64(len(dropped)))
		if len(dropped) > 0 {
			j.log.Info("usage retention dropped raw usage months", "months", monthList(dropped), "before", boundary.Format("2006-01"))
		}
	}
	if n, err := j.opts.Store.Sessions().DeleteExpired(ctx, now); err != nil {
		j.fail("sessions")
		errs = append(errs, err)
	} else {
		res.SessionsDeleted = n
		j.sessionsDeleted.Add(float64(n))
	}
	if n, err := j.opts.Store.LoginThrottles().DeleteExpired(ctx, now); err != nil {
		j.fail("login_throttle")
		errs = append(errs, err)
	} else {
		res.ThrottlesDeleted = n
	}
	if n, err := j.opts.Store.Headroom().DeleteBefore(ctx, now.Add(-store.HeadroomRetention)); err != nil {
		j.fail("headroom")
		errs = append(errs, err)
	} else {
		res.HeadroomDeleted = n
	}
	// Abandoned single sign-on logins (the browser never came back).
	if _, err := j.opts.Store.OIDCFlows().DeleteExpired(ctx, now); err != nil {
		j.fail("oidc_flows")
		errs = append(errs, err)
	}
	if keys, err := j.opts.Store.AccessKeys().RevokeExpiredRotations(ctx); err != nil {
		j.fail("keys")
		errs = append(errs, err)
	} else {
		res.KeysExpired = len(keys)
		j.keysExpired.Add(float64(len(keys)))
		if len(keys) > 0 {
			j.log.Info("revoked rotated access keys whose grace period ended", "count", len(keys))
			if j.opts.Invalidate != nil {
				hashes := make([][]byte, len(keys))
				for i, k := range keys {
					hashes[i] = k.Hash
				}
				if err := j.opts.Invalidate(ctx, hashes...); err != nil {
					j.fail("keys")
					errs = append(errs, fmt.Errorf("maintenance: invalidate expired keys: %w", err))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		j.passes.WithLabelValues("error").Inc()
		return res, err
	}
	j.passes.WithLabelValues("ok").Inc()
	j.lastSuccess.Set(float64(j.now().UnixNano()) / 1e9)
	return res, nil
}

// dropBefore calls DropPartitionsBefore only when some monthly partition is
// older than boundary. Once the old months are gone there is nothing more
// to do, and this spares the hourly pass DropPartitionsBefore's sequential
// scan of usage_dedupe.
func (j *Job) dropBefore(ctx context.Context, boundary time.Time) ([]time.Time, error) {
	usage := j.opts.Store.Usage()
	parts, err := usage.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 || !parts[0].Before(boundary) {
		return nil, nil
	}
	return usage.DropPartitionsBefore(ctx, boundary)
}

// Metrics are the Job's collectors, for tests and for callers that
// register them themselves.
type Metrics struct {
	LastSuccess       prometheus.Gauge
	Passes            *prometheus.CounterVec
	Errors            *prometheus.CounterVec
	PartitionsDropped prometheus.Counter
	SessionsDeleted   prometheus.Counter
	KeysExpired       prometheus.Counter
}

// Metrics returns the Job's collectors.
func (j *Job) Metrics() Metrics {
	return Metrics{j.lastSuccess, j.passes, j.errors, j.partitionsDropped, j.sessionsDeleted, j.keysExpired}
}

func (j *Job) fail(task string) { j.errors.WithLabelValues(task).Inc() }

func monthList(ms []time.Time) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Format("2006-01")
	}
	return out
}
