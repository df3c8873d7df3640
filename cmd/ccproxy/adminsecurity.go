package main

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/config"
)

// adminSecuritySettings are the admin service's protections: whom it
// believes about client addresses, cookies, sessions, login throttling and
// the HTTP server's limits (docs/operations.md, "Security model: admin
// service").
type adminSecuritySettings struct {
	// TrustedProxies are the networks whose X-Forwarded-For and
	// X-Forwarded-Proto are believed; empty believes none.
	TrustedProxies []netip.Prefix
	CookieSecure   admin.CookieSecure
	// SessionTTL and SessionIdleTimeout end admin sessions.
	SessionTTL         time.Duration
	SessionIdleTimeout time.Duration
	// MaxConcurrentHashes caps the argon2id hashes run at once; 0 derives
	// it from GOMAXPROCS.
	MaxConcurrentHashes int
	// LoginAttemptsPerUsername and LoginAttemptsPerAddress are the login
	// attempts allowed before waits start.
	LoginAttemptsPerUsername int
	LoginAttemptsPerAddress  int
	// HTTP are the admin HTTP server's limits.
	HTTP admin.HTTPLimits
}

// options returns s as admin.Options fields, set on o.
func (s adminSecuritySettings) options(o *admin.Options) {
	o.SessionTTL = s.SessionTTL
	o.SessionIdleTimeout = s.SessionIdleTimeout
	o.TrustedProxies = s.TrustedProxies
	o.CookieSecure = s.CookieSecure
	o.MaxConcurrentHashes = s.MaxConcurrentHashes
	o.LoginThrottle = admin.LoginThrottle{
		Username: admin.ThrottleRule{Limit: s.LoginAttemptsPerUsername},
		Address:  admin.ThrottleRule{Limit: s.LoginAttemptsPerAddress},
	}
}

func (s *adminSecuritySettings) group() config.Group {
	return config.Group{Title: "Admin service security", Settings: []config.Setting{{
		Flag: "admin-trusted-proxies", Env: "CCPROXY_ADMIN_TRUSTED_PROXIES",
		Usage: "comma-separated CIDRs (or addresses) of the load balancers and proxies in front of the admin API; only from these is " +
			"X-Forwarded-For believed (its right-most hop that is not one of them is the client, for login throttling and the audit log) " +
			"and X-Forwarded-Proto (for Secure cookies). Empty believes no one: the client is the TCP peer",
		Set: func(v string) error {
			p, err := admin.ParseTrustedProxies(v)
			if err != nil {
				return err
			}
			s.TrustedProxies = p
			return nil
		},
	}, {
		Flag: "admin-cookie-secure", Env: "CCPROXY_ADMIN_COOKIE_SECURE", Default: "auto",
		Usage: "Secure attribute of the admin session and CSRF cookies: auto (when the request came over TLS, or with " +
			"X-Forwarded-Proto https from a trusted proxy), true (always; use it behind a TLS-terminating load balancer you cannot list) or false",
		Set: func(v string) error {
			c, err := admin.ParseCookieSecure(v)
			if err != nil {
				return errors.New("must be auto, true or false")
			}
			s.CookieSecure = c
			return nil
		},
	}, {
		Flag: "admin-session-ttl", Env: "CCPROXY_ADMIN_SESSION_TTL", Default: "12h",
		Usage: "absolute lifetime of an admin session",
		Set:   minDuration(time.Minute, &s.SessionTTL),
	}, {
		Flag: "admin-session-idle-timeout", Env: "CCPROXY_ADMIN_SESSION_IDLE_TIMEOUT", Default: "30m",
		Usage: "an admin session not used for this long ends (activity is recorded at most once a minute)",
		Set:   minDuration(2*time.Minute, &s.SessionIdleTimeout),
	}, {
		Flag: "admin-max-concurrent-hashes", Env: "CCPROXY_ADMIN_MAX_CONCURRENT_HASHES", Default: "0",
		Usage: "argon2id password hashes (19 MiB each) run at once by logins and password changes; more get 429 at once. " +
			"0 is twice GOMAXPROCS",
		Set: intRange(0, 1024, &s.MaxConcurrentHashes),
	}, {
		Flag: "admin-login-attempts-per-username", Env: "CCPROXY_ADMIN_LOGIN_ATTEMPTS_PER_USERNAME", Default: "5",
		Usage: "login attempts for one username, from anywhere, before each further attempt waits (1 minute, doubling to 15; " +
			"forgotten an hour after the last attempt)",
		Set: intRange(1, 1000, &s.LoginAttemptsPerUsername),
	}, {
		Flag: "admin-login-attempts-per-address", Env: "CCPROXY_ADMIN_LOGIN_ATTEMPTS_PER_ADDRESS", Default: "20",
		Usage: "login attempts from one client address (an IPv6 client's /64), for any usernames, before each further attempt waits; " +
			"successful logins do not count",
		Set: intRange(1, 100000, &s.LoginAttemptsPerAddress),
	}, {
		Flag: "admin-read-header-timeout", Env: "CCPROXY_ADMIN_READ_HEADER_TIMEOUT", Default: "10s",
		Usage: "time a client has to send a request's headers to the admin API (closes slowloris connections)",
		Set:   minDuration(100*time.Millisecond, &s.HTTP.ReadHeaderTimeout),
	}, {
		Flag: "admin-read-timeout", Env: "CCPROXY_ADMIN_READ_TIMEOUT", Default: "30s",
		Usage: "time a client has to send a whole request (headers and body, at most 64 KiB) to the admin API",
		Set:   minDuration(100*time.Millisecond, &s.HTTP.ReadTimeout),
	}, {
		Flag: "admin-write-timeout", Env: "CCPROXY_ADMIN_WRITE_TIMEOUT", Default: "2m",
		Usage: "time the admin API has to answer a request, from the end of its headers; covers the largest listings",
		Set:   minDuration(time.Second, &s.HTTP.WriteTimeout),
	}, {
		Flag: "admin-idle-timeout", Env: "CCPROXY_ADMIN_IDLE_TIMEOUT", Default: "2m",
		Usage: "how long an idle keep-alive connection to the admin API stays open",
		Set:   minDuration(time.Second, &s.HTTP.IdleTimeout),
	}, {
		Flag: "admin-max-header-bytes", Env: "CCPROXY_ADMIN_MAX_HEADER_BYTES", Default: "65536",
		Usage: "largest request line and headers the admin API reads; larger requests get 431",
		Set:   intRange(4096, 1<<20, &s.HTTP.MaxHeaderBytes),
	}}}
}

// intRange parses a whole number from min to max into dst.
func intRange(min, max int, dst *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < min || n > max {
			return errors.New("must be a whole number from " + strconv.Itoa(min) + " to " + strconv.Itoa(max))
		}
		*dst = n
		return nil
	}
}
