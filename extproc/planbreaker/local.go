package planbreaker

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
)

// localBackend is the per-replica breaker used while Redis is unreachable:
// the scripts in redis.go, transcribed to Go over a map (see the package doc
// for why this is not gobreaker).
type localBackend struct {
	idle, lease, window time.Duration
	threshold           int
	maxEntries          int

	mu      sync.Mutex
	entries map[uuid.UUID]*localEntry
}

// localEntry mirrors one access key's Redis keys; zero times are absent
// keys.
type localEntry struct {
	until, exp time.Time   // the open hash
	preemptive bool        // the open hash's why is "p"
	leaseUntil time.Time   // the probe key
	fails      []time.Time // the failure window, oldest first
}

func newLocalBackend(cfg Config) *localBackend {
	return &localBackend{
		idle:       cfg.DefaultOpen,
		lease:      cfg.ProbeLease,
		window:     cfg.FailureWindow,
		threshold:  cfg.FailureThreshold,
		maxEntries: cfg.MaxLocalEntries,
		entries:    make(map[uuid.UUID]*localEntry),
	}
}

// prev is prevState: it classifies e at now, forgetting a half-open breaker
// past its exp.
func (e *localEntry) prev(now time.Time) (prev string, forgot bool) {
	if e.until.IsZero() {
		return "closed", false
	}
	if !now.Before(e.exp) {
		e.until, e.exp, e.leaseUntil, e.preemptive = time.Time{}, time.Time{}, time.Time{}, false
		return "closed", true
	}
	if now.Before(e.until) {
		return "open", false
	}
	return "half", false
}

func (e *localEntry) openUntil(until time.Time, idle time.Duration, preemptive bool) {
	e.until, e.exp, e.preemptive = until, until.Add(idle), preemptive
	e.fails, e.leaseUntil = nil, time.Time{}
}

// trim drops failures at least window old (scores in (now-window, now]
// count, as in failureScript).
func (e *localEntry) trim(now time.Time, window time.Duration) {
	for len(e.fails) > 0 && !e.fails[0].After(now.Add(-window)) {
		e.fails = e.fails[1:]
	}
}

// get returns id's entry, creating it if create; the caller holds mu.
func (l *localBackend) get(id uuid.UUID, now time.Time, create bool) *localEntry {
	if e, ok := l.entries[id]; ok {
		return e
	}
	if !create {
		return &localEntry{}
	}
	if len(l.entries) >= l.maxEntries {
		l.evictLocked(now)
	}
	e := &localEntry{}
	l.entries[id] = e
	return e
}

// done drops id's entry when it holds nothing; the caller holds mu.
func (l *localBackend) done(id uuid.UUID, e *localEntry, now time.Time) {
	e.trim(now, l.window)
	if e.until.IsZero() && len(e.fails) == 0 {
		delete(l.entries, id)
	}
}

// evictLocked drops an idle entry, else one whose open-until is soonest of
// a sample. Sampling (Go's map iteration order) keeps eviction O(1); the
// map only matters during Redis outages.
func (l *localBackend) evictLocked(now time.Time) {
	var victim uuid.UUID
	var soonest time.Time
	n := 0
	for id, e := range l.entries {
		if p, _ := e.prev(now); p == "closed" {
			delete(l.entries, id)
			return
		}
		if n == 0 || e.until.Before(soonest) {
			victim, soonest = id, e.until
		}
		if n++; n >= 16 {
			break
		}
	}
	delete(l.entries, victim)
}

func (l *localBackend) state(_ context.Context, id uuid.UUID, now time.Time) (Decision, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(id, now, false)
	defer l.done(id, e, now)
	prev, forgot := e.prev(now)
	switch prev {
	case "closed":
		if forgot {
			return Decision{}, toClosed, nil
		}
		return Decision{}, toNone, nil
	case "open":
		return Decision{Route: RouteOpen, OpenUntil: e.until, Preemptive: e.preemptive}, toNone, nil
	}
	if now.Before(e.leaseUntil) {
		return Decision{Route: RouteOpen, OpenUntil: e.until, Preemptive: e.preemptive}, toNone, nil
	}
	e.leaseUntil = now.Add(l.lease)
	if ne := e.leaseUntil.Add(l.idle); ne.After(e.exp) {
		e.exp = ne
	}
	return Decision{Route: RouteProbe, OpenUntil: e.until, Preemptive: e.preemptive}, toHalfOpen, nil
}

func (l *localBackend) open(_ context.Context, id uuid.UUID, now, until time.Time, preemptive bool) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(id, now, true)
	defer l.done(id, e, now)
	prev, forgot := e.prev(now)
	nu, pre := until, preemptive
	if prev == "open" && e.until.After(nu) {
		nu, pre = e.until, e.preemptive
	}
	e.openUntil(nu, l.idle, pre)
	if prev == "open" {
		return localTransition(false, forgot, toOpen), nil
	}
	return toOpen, nil
}

func (l *localBackend) failure(_ context.Context, id uuid.UUID, now time.Time) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(id, now, true)
	defer l.done(id, e, now)
	prev, forgot := e.prev(now)
	switch prev {
	case "open":
		return toNone, nil
	case "half":
		e.openUntil(now.Add(l.idle), l.idle, false)
		return toOpen, nil
	}
	e.trim(now, l.window)
	e.fails = append(e.fails, now)
	if len(e.fails) >= l.threshold {
		e.openUntil(now.Add(l.idle), l.idle, false)
		return toOpen, nil
	}
	return localTransition(false, forgot, toOpen), nil
}

func (l *localBackend) success(_ context.Context, id uuid.UUID, now time.Time) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.get(id, now, false)
	defer l.done(id, e, now)
	prev, forgot := e.prev(now)
	if prev == "half" {
		*e = localEntry{}
		return toClosed, nil
	}
	return localTransition(false, forgot, toClosed), nil
}

// localTransition is transition for the local backend.
func localTransition(transitioned, forgot bool, to string) string {
	switch {
	case transitioned:
		return to
	case forgot:
		return toClosed
	}
	return toNone
}
