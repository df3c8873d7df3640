package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/config"
)

func TestAdminSecuritySettings(t *testing.T) {
	load := func(e map[string]string) (*adminSecuritySettings, error) {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		s := &adminSecuritySettings{}
		return s, config.Bind(fs, s.group()).WithLookup(env(e)).Load()
	}
	s, err := load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := adminSecuritySettings{
		CookieSecure: admin.CookieSecureAuto, SessionTTL: 12 * time.Hour, SessionIdleTimeout: 30 * time.Minute,
		LoginAttemptsPerUsername: 5, LoginAttemptsPerAddress: 20,
		HTTP: admin.HTTPLimits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 65536},
	}
	if fmt.Sprintf("%+v", *s) != fmt.Sprintf("%+v", want) {
		t.Errorf("defaults %+v\nwant %+v", *s, want)
	}
	if s.HTTP != admin.DefaultHTTPLimits() {
		t.Errorf("the settings' server limits %+v differ from admin.DefaultHTTPLimits %+v", s.HTTP, admin.DefaultHTTPLimits())
	}
	s, err = load(map[string]string{
		"CCPROXY_ADMIN_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1", "CCPROXY_ADMIN_COOKIE_SECURE": "true",
		"CCPROXY_ADMIN_MAX_CONCURRENT_HASHES": "3", "CCPROXY_ADMIN_SESSION_IDLE_TIMEOUT": "5m",
		"CCPROXY_ADMIN_LOGIN_ATTEMPTS_PER_ADDRESS": "50",
	})
	if err != nil || fmt.Sprint(s.TrustedProxies) != "[10.0.0.0/8 192.0.2.1/32]" || s.CookieSecure != admin.CookieSecureAlways ||
		s.MaxConcurrentHashes != 3 || s.SessionIdleTimeout != 5*time.Minute || s.LoginAttemptsPerAddress != 50 {
		t.Errorf("got %+v, %v", s, err)
	}
	var o admin.Options
	s.options(&o)
	if fmt.Sprint(o.TrustedProxies) != "[10.0.0.0/8 192.0.2.1/32]" || o.CookieSecure != admin.CookieSecureAlways || o.MaxConcurrentHashes != 3 ||
		o.SessionIdleTimeout != 5*time.Minute || o.SessionTTL != 12*time.Hour ||
		o.LoginThrottle != (admin.LoginThrottle{Username: admin.ThrottleRule{Limit: 5}, Address: admin.ThrottleRule{Limit: 50}}) {
		t.Errorf("options %+v", o)
	}
	for _, tc := range []struct{ env, value, want string }{
		{"CCPROXY_ADMIN_TRUSTED_PROXIES", "10.0.0.0/33", "neither a CIDR nor an IP address"},
		{"CCPROXY_ADMIN_TRUSTED_PROXIES", "lb.internal", "neither a CIDR nor an IP address"},
		{"CCPROXY_ADMIN_COOKIE_SECURE", "yes", "must be auto, true or false"},
		{"CCPROXY_ADMIN_SESSION_IDLE_TIMEOUT", "1m", "at least 2m0s"},
		{"CCPROXY_ADMIN_MAX_CONCURRENT_HASHES", "-1", "from 0 to 1024"},
		{"CCPROXY_ADMIN_LOGIN_ATTEMPTS_PER_USERNAME", "0", "from 1 to 1000"},
		{"CCPROXY_ADMIN_MAX_HEADER_BYTES", "100", "from 4096 to 1048576"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			if _, err := load(map[string]string{tc.env: tc.value}); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
