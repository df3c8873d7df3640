package observability

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricDesc is what the metrics reference says of one metric.
type MetricDesc struct {
	// Name is the metric's fully qualified name.
	Name string
	// Help is its help text.
	Help string
	// Labels are its variable labels, in order.
	Labels []string
}

// Catalog is a prometheus.Registerer that passes every collector on to
// another and records the metrics it describes, so that the metrics
// reference (docs/metrics.md) can be generated from what the commands
// really register. It is safe for concurrent use.
type Catalog struct {
	prometheus.Registerer
	mu      sync.Mutex
	metrics map[string]MetricDesc
}

// NewCatalog returns a Catalog registering on r.
func NewCatalog(r prometheus.Registerer) *Catalog {
	return &Catalog{Registerer: r, metrics: map[string]MetricDesc{}}
}

// Register registers c and records its metrics.
func (c *Catalog) Register(col prometheus.Collector) error {
	if err := c.Registerer.Register(col); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		col.Describe(ch)
		close(ch)
	}()
	var errs []string
	for d := range ch {
		m, err := parseDesc(d.String())
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		c.mu.Lock()
		c.metrics[m.Name] = m
		c.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("catalog: %s", strings.Join(errs, "; "))
	}
	return nil
}

// MustRegister registers each collector and panics on the first error, as
// prometheus.Registry.MustRegister does.
func (c *Catalog) MustRegister(cs ...prometheus.Collector) {
	for _, col := range cs {
		if err := c.Register(col); err != nil {
			panic(err)
		}
	}
}

// Metrics returns the recorded metrics sorted by name.
func (c *Catalog) Metrics() []MetricDesc {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]MetricDesc, 0, len(c.metrics))
	for _, m := range c.metrics {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// descPattern reads prometheus.Desc.String(), the only way the client
// library shows a Desc's name, help and labels:
// Desc{fqName: "x", help: "y", unit: "", constLabels: {}, variableLabels: {a,b}}
// (older releases have no unit).
var descPattern = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), (?:unit: "(?:[^"\\]|\\.)*", )?constLabels: \{[^}]*\}, variableLabels: [{\[]([^}\]]*)[}\]]\}$`)

func parseDesc(s string) (MetricDesc, error) {
	m := descPattern.FindStringSubmatch(s)
	if m == nil {
		return MetricDesc{}, fmt.Errorf("unreadable metric description %s", s)
	}
	name, err := strconv.Unquote(m[1])
	if err != nil {
		return MetricDesc{}, err
	}
	help, err := strconv.Unquote(m[2])
	if err != nil {
		return MetricDesc{}, err
	}
	labels := strings.FieldsFunc(m[3], func(r rune) bool { return r == ',' || r == ' ' })
	if len(labels) == 0 {
		labels = nil // a metric without labels has none, not an empty list
	}
	return MetricDesc{Name: name, Help: help, Labels: labels}, nil
}
