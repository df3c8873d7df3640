package depbreaker

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

func TestSettings(t *testing.T) {
	notFound := errors.New("not found")
	cb := gobreaker.NewCircuitBreaker[int](Settings("dep", 2, time.Hour, slog.New(slog.DiscardHandler),
		func(err error) bool { return err == nil || errors.Is(err, notFound) }))
	fail := func(err error) { _, _ = cb.Execute(func() (int, error) { return 0, err }) }

	fail(notFound)         // a success
	fail(context.Canceled) // neither
	fail(errors.New("down"))
	if cb.State() != gobreaker.StateClosed {
		t.Fatalf("one failure opened it")
	}
	fail(context.Canceled) // does not reset the count
	fail(errors.New("down"))
	if cb.State() != gobreaker.StateOpen {
		t.Fatalf("two consecutive failures left it %s", cb.State())
	}
	if _, err := cb.Execute(func() (int, error) { return 1, nil }); !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("open breaker ran the call: %v", err)
	}
}
