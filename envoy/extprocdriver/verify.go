package extprocdriver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/ccproxy/ccproxy/envoy/extprocrules"
)

// point is where in an exchange a message is checked.
type point int

const (
	routedRequest point = iota
	upstreamRequest
	downstreamResponse
	numPoints
)

func (p point) String() string {
	return [...]string{"routed_request", "upstream_request", "downstream_response"}[p]
}

// messageCheck is a compiled MessageExpect.
type messageCheck struct {
	MessageExpect
	bodyEquals []byte // nil: no exact body expected
}

func compileCheck(e *MessageExpect, file func(string) string) (*messageCheck, error) {
	c := &messageCheck{MessageExpect: *e}
	if e.BodyEqualsFile != "" {
		b, err := os.ReadFile(file(e.BodyEqualsFile))
		if err != nil {
			return nil, fmt.Errorf("body_equals_file: %w", err)
		}
		c.bodyEquals = b
	}
	return c, nil
}

// ExpectationError is an exchange whose messages Envoy accepted but that
// is not what the scenario expects.
type ExpectationError struct {
	// Point names the message: routed_request, upstream_request or
	// downstream_response.
	Point string
	Err   error
}

func (e *ExpectationError) Error() string { return e.Point + ": " + e.Err.Error() }

func (e *ExpectationError) Unwrap() error { return e.Err }

// Verifier checks exchanges against their scenario's expectations. Header
// checks run on every exchange; a body identical to the last one that
// passed is not checked again, so that checking every exchange of a 48 KB
// body costs a comparison, not a JSON parse. A Verifier is not safe for
// concurrent use: give each worker its own.
type Verifier struct {
	s      *Scenario
	passed [numPoints][]byte
}

// NewVerifier returns a Verifier for s.
func NewVerifier(s *Scenario) *Verifier { return &Verifier{s: s} }

// Verify returns an *ExpectationError for the first check o fails.
func (v *Verifier) Verify(o *Outcome) error {
	for p, m := range [numPoints]*Message{&o.RoutedRequest, &o.UpstreamRequest, &o.DownstreamResponse} {
		c := v.s.expect[p]
		if c == nil {
			continue
		}
		if err := c.headers(m.Headers); err != nil {
			return &ExpectationError{Point: point(p).String(), Err: err}
		}
		if v.passed[p] != nil && bytes.Equal(v.passed[p], m.Body) {
			continue
		}
		if err := c.body(m.Body); err != nil {
			return &ExpectationError{Point: point(p).String(), Err: err}
		}
		v.passed[p] = append(v.passed[p][:0], m.Body...)
	}
	return nil
}

func (c *messageCheck) headers(h *extprocrules.HeaderMap) error {
	for _, k := range sortedKeys(c.HeaderEquals) {
		want := c.HeaderEquals[k]
		if got, ok := h.Get(strings.ToLower(k)); !ok || got != want {
			if !ok {
				return fmt.Errorf("header %s is missing, want %q", k, want)
			}
			return fmt.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range c.HeadersPresent {
		if !h.Has(strings.ToLower(k)) {
			return fmt.Errorf("header %s is missing", k)
		}
	}
	for _, k := range c.HeadersAbsent {
		if v, ok := h.Get(strings.ToLower(k)); ok {
			return fmt.Errorf("header %s = %q, want it absent", k, v)
		}
	}
	return nil
}

func (c *messageCheck) body(b []byte) error {
	if c.bodyEquals != nil && !bytes.Equal(b, c.bodyEquals) {
		return fmt.Errorf("body (%d bytes) differs from %s (%d bytes) at byte %d", len(b), c.BodyEqualsFile, len(c.bodyEquals), firstDifference(b, c.bodyEquals))
	}
	for _, s := range c.BodyContains {
		if !bytes.Contains(b, []byte(s)) {
			return fmt.Errorf("body (%d bytes) lacks %q", len(b), s)
		}
	}
	for _, s := range c.BodyNotContains {
		if bytes.Contains(b, []byte(s)) {
			return fmt.Errorf("body (%d bytes) contains %q", len(b), s)
		}
	}
	if len(c.JSONKeysPresent)+len(c.JSONKeysAbsent) == 0 {
		return nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return fmt.Errorf("body (%d bytes) is not a JSON object: %w", len(b), err)
	}
	for _, k := range c.JSONKeysPresent {
		if _, ok := top[k]; !ok {
			return fmt.Errorf("JSON body lacks the top-level key %q", k)
		}
	}
	for _, k := range c.JSONKeysAbsent {
		if _, ok := top[k]; ok {
			return fmt.Errorf("JSON body has the top-level key %q, want it absent", k)
		}
	}
	return nil
}

func firstDifference(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
