package envoysim

import (
	"maps"
	"sync"
)

// Counter names envoysim keeps, as Envoy names them
// (envoy/upstream/upstream.h ALL_CLUSTER_TRAFFIC_STATS and
// ALL_CLUSTER_CONFIG_UPDATE_STATS); each is prefixed with
// "cluster.<cluster name>.".
const (
	// statRetryOrShadowAbandoned counts requests whose body outgrew the
	// retry buffer: retries were disabled for them (router.cc decodeData).
	statRetryOrShadowAbandoned = "retry_or_shadow_abandoned"
	// statNoneHealthy counts host selections that found no host
	// (cluster_manager_impl.cc ClusterEntry::chooseHost).
	statNoneHealthy = "upstream_cx_none_healthy"
	// statRetry counts scheduled retries, statRetryOverflow retries the
	// max_retries circuit breaker refused (retry_state_impl.cc shouldRetry).
	statRetry         = "upstream_rq_retry"
	statRetryOverflow = "upstream_rq_retry_overflow"
	// statUpdateFailure counts STRICT_DNS resolutions that failed other
	// than with "no such name" (strict_dns_cluster.cc startResolve).
	statUpdateFailure = "update_failure"
)

// counters is a set of monotonic counters keyed by Envoy stat name.
type counters struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *counters) inc(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[name]++
}

func (c *counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// incCluster counts one event of a cluster counter.
func (s *Sim) incCluster(cluster, stat string) {
	s.stats.inc("cluster." + cluster + "." + stat)
}

// Stats returns the counters envoysim keeps, keyed by Envoy's stat name
// (e.g. cluster.<name>.retry_or_shadow_abandoned), so tests can assert what
// an operator would scrape from Envoy's /stats. Only the counters FIDELITY.md
// lists are kept, and one that never moved is absent.
func (s *Sim) Stats() map[string]uint64 {
	out := s.stats.snapshot()
	if out == nil {
		out = map[string]uint64{}
	}
	return out
}
