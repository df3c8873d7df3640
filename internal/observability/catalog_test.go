package observability

import (
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCatalogRecordsRegisteredMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCatalog(reg)
	c.MustRegister(
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccproxy_b_total", Help: `b "quoted", {braced}`}, []string{"reason", "route"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "ccproxy_a", Help: "a", ConstLabels: prometheus.Labels{"x": "y"}}),
	)
	want := []MetricDesc{
		{Name: "ccproxy_a", Help: "a"},
		{Name: "ccproxy_b_total", Help: `b "quoted", {braced}`, Labels: []string{"reason", "route"}},
	}
	if got := c.Metrics(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if err := c.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "ccproxy_a", Help: "a", ConstLabels: prometheus.Labels{"x": "y"}})); err == nil {
		t.Fatal("a duplicate registration succeeded")
	}
}
