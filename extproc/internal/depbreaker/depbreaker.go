// Package depbreaker owns the circuit-breaker policy extproc applies to its
// own dependency calls (Redis, the admin service's KeyService): one
// sony/gobreaker configuration shared by the key lookup and the budget
// check, so that a dead dependency costs a fast error rather than a timeout
// per request, the same way everywhere.
package depbreaker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Settings returns the breaker settings for the dependency called name:
// failures consecutive failures open it, it then fails calls at once for
// openDelay before letting one through; ok decides which errors count as
// successes (e.g. "not found" answers); a cancelled caller counts as
// neither. State changes are logged at warn level.
func Settings(name string, failures uint32, openDelay time.Duration, log *slog.Logger, ok func(error) bool) gobreaker.Settings {
	return gobreaker.Settings{
		Name:        name,
		Timeout:     openDelay,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// The caller giving up says nothing about the dependency.
		IsExcluded:   func(err error) bool { return errors.Is(err, context.Canceled) },
		IsSuccessful: ok,
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
		},
	}
}
