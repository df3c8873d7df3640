package main

import (
	"errors"
	"strconv"
	"time"

	"github.com/ccproxy/ccproxy/internal/config"
)

// webhookSettings tune the admin service's webhook notifications
// (admin/notifications).
type webhookSettings struct {
	// AllowPrivate lets webhooks reach loopback, private and link-local
	// addresses.
	AllowPrivate bool
	// Timeout bounds one delivery attempt.
	Timeout time.Duration
	// MaxAttempts is how many attempts a delivery gets.
	MaxAttempts int
	// BreakerAfter is how long a developer's Plan breaker must stay open
	// before breaker.opened is sent; 0 sends none.
	BreakerAfter time.Duration
}

func (s *webhookSettings) group() config.Group {
	return config.Group{Title: "Webhook notifications", Settings: []config.Setting{{
		Flag: "webhook-allow-private", Env: "CCPROXY_WEBHOOK_ALLOW_PRIVATE", Default: "false",
		Usage: "let webhooks reach loopback, private, link-local and other non-public addresses (a receiver inside the company network); " +
			"by default such URLs are refused by the API and every dialled address is checked after DNS resolution",
		Set: func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("must be true or false")
			}
			s.AllowPrivate = b
			return nil
		},
	}, {
		Flag: "webhook-timeout", Env: "CCPROXY_WEBHOOK_TIMEOUT", Default: "10s",
		Usage: "time limit of one webhook delivery attempt (connect, send, answer)",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > 5*time.Minute {
				return errors.New("must be a duration from 100ms to 5m, such as 10s")
			}
			s.Timeout = d
			return nil
		},
	}, {
		Flag: "webhook-max-attempts", Env: "CCPROXY_WEBHOOK_MAX_ATTEMPTS", Default: "15",
		Usage: "attempts a webhook delivery gets before it is marked failed; retries wait 10s doubling to 1h, with jitter (15 attempts span about 8 hours)",
		Set: func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return errors.New("must be a whole number from 1 to 100")
			}
			s.MaxAttempts = n
			return nil
		},
	}, {
		Flag: "webhook-breaker-open-after", Env: "CCPROXY_WEBHOOK_BREAKER_OPEN_AFTER", Default: "15m",
		Usage: "send breaker.opened when a developer's Plan circuit breaker has been (or is announced to be) open this long; 0 sends none",
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || (d > 0 && d < time.Minute) {
				return errors.New("must be 0 or a duration of at least 1m, such as 15m")
			}
			s.BreakerAfter = d
			return nil
		},
	}}}
}
