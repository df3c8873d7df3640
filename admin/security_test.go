package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/store"
)

// loginOutcomes counts the answers to a set of login attempts by status and
// problem title.
type loginOutcomes map[string]int

func outcome(t *testing.T, resp response) string {
	t.Helper()
	if resp.status == http.StatusOK {
		return "200"
	}
	return fmt.Sprintf("%d %s", resp.status, resp.problem(t).Title)
}

// fromAddr is an HTTP client whose connections come from the loopback
// address local, so one test server sees several peers.
func fromAddr(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 200}}
}

// TestLoginThrottleCountsBeforeVerifying sends bursts of parallel wrong
// passwords: exactly as many are verified (401) as the throttle allows, the
// rest are refused (429) without a password check, per username and per
// client address, and X-Forwarded-For counts only from a trusted proxy.
// Each case comes from its own peer address; 127.0.0.2 is the trusted
// proxy.
func TestLoginThrottleCountsBeforeVerifying(t *testing.T) {
	const userLimit, addrLimit = 5, 10
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("10.0.0.0/8")}
	// A clock that stands still: every refusal must then announce the
	// whole first wait.
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, func(o *admin.Options) {
		o.Now = clock.now
		o.TrustedProxies = trusted
		o.MaxConcurrentHashes = addrLimit + 5
		o.LoginThrottle = admin.LoginThrottle{
			Username: admin.ThrottleRule{Limit: userLimit, Delay: time.Minute, MaxDelay: 10 * time.Minute},
			Address:  admin.ThrottleRule{Limit: addrLimit, Delay: time.Minute, MaxDelay: 10 * time.Minute},
		}
	})
	tests := []struct {
		name     string
		peer     string
		n        int
		parallel bool
		username func(i int) string
		xff      func(i int) string // nil sends none
		want     loginOutcomes
	}{
		{
			name: "one username", peer: "127.0.0.11", n: 150, parallel: true,
			username: func(int) string { return testAdmin },
			want:     loginOutcomes{"401 unauthorized": userLimit, "429 too many failed logins": 150 - userLimit},
		},
		{
			name: "many usernames from one address", peer: "127.0.0.12", n: 150, parallel: true,
			username: func(i int) string { return fmt.Sprint("many", i) },
			want:     loginOutcomes{"401 unauthorized": addrLimit, "429 too many failed logins": 150 - addrLimit},
		},
		{
			name: "X-Forwarded-For from an untrusted peer is ignored", peer: "127.0.0.13", n: 150, parallel: true,
			username: func(i int) string { return fmt.Sprint("spoof", i) },
			xff:      func(i int) string { return fmt.Sprintf("198.51.100.%d", i) },
			want:     loginOutcomes{"401 unauthorized": addrLimit, "429 too many failed logins": 150 - addrLimit},
		},
		{
			name: "X-Forwarded-For from a trusted proxy separates clients", peer: "127.0.0.2", n: addrLimit + 5,
			username: func(i int) string { return fmt.Sprint("behind", i) },
			xff:      func(i int) string { return fmt.Sprintf("198.51.100.%d", i) },
			want:     loginOutcomes{"401 unauthorized": addrLimit + 5},
		},
		{
			name: "hops left of the right-most untrusted one are the client's own", peer: "127.0.0.2", n: 40, parallel: true,
			username: func(i int) string { return fmt.Sprint("hops", i) },
			xff:      func(i int) string { return fmt.Sprintf("198.51.100.%d, 203.0.113.9, 10.1.2.3", i) },
			want:     loginOutcomes{"401 unauthorized": addrLimit, "429 too many failed logins": 40 - addrLimit},
		},
	}
	audited := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hc := fromAddr(tc.peer)
			var mu sync.Mutex
			got := loginOutcomes{}
			attempt := func(i int) {
				opts := []reqOption{noAuth}
				if tc.xff != nil {
					opts = append(opts, withHeader("X-Forwarded-For", tc.xff(i)))
				}
				resp := e.doWith(hc, "POST", "/api/v1/auth/login", map[string]string{"username": tc.username(i), "password": "wrong password!"}, opts...)
				o := outcome(t, resp)
				if resp.status == http.StatusTooManyRequests && resp.header.Get("Retry-After") != "60" {
					t.Errorf("429 with Retry-After %q, want 60", resp.header.Get("Retry-After"))
				}
				mu.Lock()
				got[o]++
				mu.Unlock()
			}
			var wg sync.WaitGroup
			for i := range tc.n {
				if tc.parallel {
					wg.Go(func() { attempt(i) })
				} else {
					attempt(i)
				}
			}
			wg.Wait()
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("outcomes %v, want %v", got, tc.want)
			}
			audited += got["401 unauthorized"]
			es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{Action: "admin.login_failed"}, store.MaxPageSize, "")
			if err != nil || len(es) != audited {
				t.Fatalf("%d failed logins audited, %v; want one per 401 (%d)", len(es), err, audited)
			}
		})
	}
}

// TestLoginBackoff walks one username through its waits with a fake clock:
// they double up to the cap, and the username can always try again after
// its wait.
func TestLoginBackoff(t *testing.T) {
	{
		clock := &fakeClock{t: time.Now()}
		e := newEnv(t, func(o *admin.Options) {
			o.Now = clock.now
			o.LoginThrottle = admin.LoginThrottle{Username: admin.ThrottleRule{Limit: 2, Delay: time.Minute, MaxDelay: 3 * time.Minute}}
		})
		bad := map[string]string{"username": testAdmin, "password": "wrong password!"}
		steps := []struct {
			advance    time.Duration
			status     int
			retryAfter string
		}{
			{0, 401, ""},
			{0, 401, ""}, // the second attempt starts a one-minute wait
			{0, 429, "60"},
			{59 * time.Second, 429, "1"},
			{time.Second, 401, ""}, // the wait doubles
			{time.Minute, 429, "60"},
			{time.Minute, 401, ""}, // and is capped at three minutes
			{2 * time.Minute, 429, "60"},
			{time.Minute, 401, ""},
		}
		for i, st := range steps {
			clock.advance(st.advance)
			resp := e.do("POST", "/api/v1/auth/login", bad, noAuth)
			if resp.status != st.status || resp.header.Get("Retry-After") != st.retryAfter {
				t.Fatalf("step %d: status %d, Retry-After %q; want %d, %q", i, resp.status, resp.header.Get("Retry-After"), st.status, st.retryAfter)
			}
		}
		// After the cap a correct password logs in and resets the count.
		clock.advance(3 * time.Minute)
		e.login(testAdmin, testPassword)
		want(t, e.do("POST", "/api/v1/auth/login", bad, noAuth), http.StatusUnauthorized)
	}
}

// TestFailedLoginsAudited checks that every failed login leaves an audit
// entry with the username as typed and the client address, and never the
// password.
func TestFailedLoginsAudited(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	e := newEnv(t, func(o *admin.Options) { o.TrustedProxies = trusted })
	ctx := context.Background()
	root, err := e.st.Admins().GetByUsername(ctx, testAdmin)
	if err != nil {
		t.Fatal(err)
	}
	off, err := e.st.Admins().Create(ctx, "off", mustHash(t, e))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.Admins().SetDisabled(ctx, off.ID, true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, username, password, xff string
		wantTarget, wantReason        string
		wantIP                        string
	}{
		{"wrong password", "ROOT", "wrong password 1", "", root.ID.String(), "bad_credentials", "127.0.0.1"},
		{"unknown admin", "nobody", "wrong password 2", "", "", "bad_credentials", "127.0.0.1"},
		{"disabled admin", "off", testPassword, "", off.ID.String(), "disabled", "127.0.0.1"},
		{"client behind a trusted proxy", "root", "wrong password 3", "192.0.2.1, 198.51.100.77", root.ID.String(), "bad_credentials", "198.51.100.77"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := []reqOption{noAuth}
			if tc.xff != "" {
				opts = append(opts, withHeader("X-Forwarded-For", tc.xff))
			}
			want(t, e.do("POST", "/api/v1/auth/login", map[string]string{"username": tc.username, "password": tc.password}, opts...), http.StatusUnauthorized)
			es, _, err := e.st.Audit().List(ctx, store.AuditFilter{Action: "admin.login_failed"}, 1, "")
			if err != nil || len(es) != 1 {
				t.Fatalf("audit %v, %v", es, err)
			}
			got := es[0]
			var after map[string]string
			if err := json.Unmarshal(got.After, &after); err != nil {
				t.Fatal(err)
			}
			wantAfter := map[string]string{"username": tc.username, "reason": tc.wantReason}
			if got.Actor != "anonymous" || got.AdminID != nil || got.TargetType != "admin" || got.TargetID != tc.wantTarget ||
				fmt.Sprint(after) != fmt.Sprint(wantAfter) || got.IP == nil || *got.IP != netip.MustParseAddr(tc.wantIP) {
				t.Fatalf("entry %+v after %v; want target %q, after %v, ip %s", got, after, tc.wantTarget, wantAfter, tc.wantIP)
			}
			if strings.Contains(string(got.After), tc.password) && tc.password != testPassword {
				t.Fatal("the password is in the audit entry")
			}
		})
	}
	all, _, err := e.st.Audit().List(ctx, store.AuditFilter{}, store.MaxPageSize, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range all {
		if strings.Contains(string(en.After)+string(en.Before), "wrong password") || strings.Contains(string(en.After), testPassword) {
			t.Errorf("a password is in audit entry %+v", en)
		}
	}
	if strings.Contains(e.logs.String(), "nobody") {
		t.Error("a typed username is in the logs")
	}
}

// TestPasswordHashCap fills every hash slot with logins blocked inside the
// hash, then checks that one more login is refused at once with 429 and
// Retry-After instead of queueing, and that the slots serve again once
// free.
func TestPasswordHashCap(t *testing.T) {
	const slots = 2
	var armed atomic.Bool
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	e := newEnv(t, func(o *admin.Options) { o.MaxConcurrentHashes = slots }, admin.WithHashHook(func() {
		if armed.Load() {
			entered <- struct{}{}
			<-release
		}
	}))
	armed.Store(true)
	results := make(chan int, slots)
	for i := range slots {
		go func() {
			// Distinct usernames: the throttle has nothing to do with this.
			resp := e.do("POST", "/api/v1/auth/login", map[string]string{"username": fmt.Sprint("blocked", i), "password": "wrong password!"}, noAuth)
			results <- resp.status
		}()
	}
	for range slots {
		<-entered
	}

	// Every endpoint that hashes is refused while the slots are full.
	extras := []struct {
		path string
		body any
	}{
		{"/api/v1/auth/login", map[string]string{"username": testAdmin, "password": testPassword}},
		{"/api/v1/admins", map[string]string{"username": "new", "password": "a long enough password"}},
		{"/api/v1/auth/password", map[string]string{"current_password": testPassword, "new_password": "a long enough password"}},
	}
	for _, x := range extras {
		extra := make(chan response, 1)
		go func() { extra <- e.do("POST", x.path, x.body) }()
		select {
		case resp := <-extra:
			want(t, resp, http.StatusTooManyRequests)
			if p := resp.problem(t); p.Title != "server busy" || resp.header.Get("Retry-After") != "1" {
				t.Errorf("%s: problem %+v, Retry-After %q", x.path, p, resp.header.Get("Retry-After"))
			}
		case <-entered:
			close(release)
			t.Fatalf("%s: a hash ran beyond the cap", x.path)
		}
	}

	armed.Store(false)
	close(release)
	for range slots {
		if st := <-results; st != http.StatusUnauthorized {
			t.Errorf("blocked login ended with %d, want 401", st)
		}
	}
	e.login(testAdmin, testPassword)
}

// TestCSRFTokenBoundToSession checks that a cookie-authenticated write
// needs the CSRF token of its own session: a token from another session, or
// one planted in the CSRF cookie, is refused even when cookie and header
// agree.
func TestCSRFTokenBoundToSession(t *testing.T) {
	e := newEnv(t)
	a := e.login(testAdmin, testPassword)
	b := e.login(testAdmin, testPassword)
	if a.CSRFToken == b.CSRFToken {
		t.Fatal("two sessions have one CSRF token")
	}
	sess := func(tok string) reqOption { return withCookie(&http.Cookie{Name: admin.SessionCookie, Value: tok}) }
	csrf := func(tok string) []reqOption {
		return []reqOption{withCookie(&http.Cookie{Name: admin.CSRFCookie, Value: tok}), withHeader(admin.CSRFHeader, tok)}
	}
	tests := []struct {
		name   string
		opts   []reqOption
		status int
	}{
		{"own token", append([]reqOption{noAuth, sess(a.Token)}, csrf(a.CSRFToken)...), http.StatusCreated},
		{"another session's token", append([]reqOption{noAuth, sess(a.Token)}, csrf(b.CSRFToken)...), http.StatusForbidden},
		{"planted token", append([]reqOption{noAuth, sess(a.Token)}, csrf("planted-by-a-sibling-subdomain")...), http.StatusForbidden},
		{"the session token itself", append([]reqOption{noAuth, sess(a.Token)}, csrf(a.Token)...), http.StatusForbidden},
		{"own token in the header, another in the cookie", []reqOption{noAuth, sess(a.Token),
			withCookie(&http.Cookie{Name: admin.CSRFCookie, Value: b.CSRFToken}), withHeader(admin.CSRFHeader, a.CSRFToken)}, http.StatusForbidden},
		{"other session, own token", append([]reqOption{noAuth, sess(b.Token)}, csrf(b.CSRFToken)...), http.StatusCreated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do("POST", "/api/v1/users", map[string]any{"name": tc.name}, tc.opts...)
			want(t, resp, tc.status)
		})
	}
}

// TestSessionIdleTimeout checks that a session unused for the idle timeout
// ends, while use keeps it alive within its lifetime.
func TestSessionIdleTimeout(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, func(o *admin.Options) {
		o.Now = clock.now
		o.SessionIdleTimeout = 30 * time.Minute
	})
	used := e.login(testAdmin, testPassword).Token
	idle := e.login(testAdmin, testPassword).Token
	steps := []struct {
		name          string
		advance       time.Duration
		token         string
		status        int
		wantLastSeen  time.Duration // the session's last_seen_at after the step, from the start
		checkLastSeen bool
	}{
		{"used at 29m", 29 * time.Minute, used, http.StatusOK, 29 * time.Minute, true},
		{"used again at 58m", 29 * time.Minute, used, http.StatusOK, 58 * time.Minute, true},
		{"a request within the touch interval writes nothing", 30 * time.Second, used, http.StatusOK, 58 * time.Minute, true},
		{"the other session idled out", 0, idle, http.StatusUnauthorized, 0, false},
		{"idle for 30m", 30 * time.Minute, used, http.StatusUnauthorized, 0, false},
	}
	start := clock.now()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.advance(st.advance)
			resp := e.do("GET", "/api/v1/users", nil, withHeader("Authorization", "Bearer "+st.token))
			want(t, resp, st.status)
			if st.status == http.StatusUnauthorized {
				if p := resp.problem(t); !strings.Contains(p.Detail, "without use") {
					t.Errorf("detail %q", p.Detail)
				}
			}
			if st.checkLastSeen {
				raw, _ := base64.RawURLEncoding.DecodeString(st.token)
				id := sha256.Sum256(raw)
				s, _, err := e.st.Sessions().Get(context.Background(), id[:])
				if err != nil || !s.LastSeenAt.Equal(start.Add(st.wantLastSeen).Truncate(time.Microsecond)) {
					t.Errorf("last seen %v, %v; want %v", s.LastSeenAt, err, start.Add(st.wantLastSeen))
				}
			}
		})
	}
}

// TestCookieSecure checks the Secure attribute of the session and CSRF
// cookies, at login and logout, for each mode, with and without TLS and
// X-Forwarded-Proto from trusted and untrusted peers.
func TestCookieSecure(t *testing.T) {
	e := newEnv(t)
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	tests := []struct {
		name   string
		mode   admin.CookieSecure
		tls    bool
		peer   string
		xfp    string
		secure bool
	}{
		{"auto, plain http", admin.CookieSecureAuto, false, "127.0.0.1", "", false},
		{"auto, TLS", admin.CookieSecureAuto, true, "127.0.0.1", "", true},
		{"auto, https from an untrusted peer", admin.CookieSecureAuto, false, "127.0.0.1", "https", false},
		{"auto, https from a trusted proxy", admin.CookieSecureAuto, false, "127.0.0.2", "https", true},
		{"auto, https among several values", admin.CookieSecureAuto, false, "127.0.0.2", "http, HTTPS", true},
		{"auto, http from a trusted proxy", admin.CookieSecureAuto, false, "127.0.0.2", "http", false},
		{"true, plain http", admin.CookieSecureAlways, false, "127.0.0.1", "", true},
		{"false, TLS", admin.CookieSecureNever, true, "127.0.0.2", "https", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := admin.New(admin.Options{Store: e.st, Sealer: e.sealer, Hasher: e.hasher, CookieSecure: tc.mode, TrustedProxies: trusted})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(srv.Handler())
			hc := fromAddr(tc.peer)
			if tc.tls {
				ts.StartTLS()
				tr := ts.Client().Transport.(*http.Transport).Clone()
				tr.DialContext = hc.Transport.(*http.Transport).DialContext
				hc = &http.Client{Transport: tr}
			} else {
				ts.Start()
			}
			defer ts.Close()
			send := func(path, token string, body string) *http.Response {
				req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				if tc.xfp != "" {
					req.Header.Set("X-Forwarded-Proto", tc.xfp)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp
			}
			login := send("/api/v1/auth/login", "", `{"username":"`+testAdmin+`","password":"`+testPassword+`"}`)
			var token string
			for _, c := range login.Cookies() {
				if c.Name == admin.SessionCookie {
					token = c.Value
				}
			}
			logout := send("/api/v1/auth/logout", token, "")
			for _, resp := range []*http.Response{login, logout} {
				cs := resp.Cookies()
				if len(cs) != 2 {
					t.Fatalf("%s: %d cookies, want 2", resp.Request.URL.Path, len(cs))
				}
				for _, c := range cs {
					if c.Secure != tc.secure {
						t.Errorf("%s: cookie %s Secure = %v, want %v", resp.Request.URL.Path, c.Name, c.Secure, tc.secure)
					}
				}
			}
		})
	}
	if _, err := admin.New(admin.Options{Store: e.st, Sealer: e.sealer, Hasher: e.hasher, CookieSecure: "yes"}); err == nil {
		t.Error("an unknown cookie mode was accepted")
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  bool
	}{
		{"", "[]", false},
		{"10.0.0.0/8, 192.0.2.1 ,2001:db8::/32", "[10.0.0.0/8 192.0.2.1/32 2001:db8::/32]", false},
		{"10.1.2.3/8", "[10.0.0.0/8]", false},
		{"::ffff:10.0.0.0/104", "[10.0.0.0/8]", false},
		{"::ffff:192.0.2.1", "[192.0.2.1/32]", false},
		{"fe80::1%eth0", "", true},
		{"10.0.0.0/33", "", true},
		{"proxy.internal", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := admin.ParseTrustedProxies(tc.in)
			if (err != nil) != tc.err || !tc.err && fmt.Sprint(got) != tc.want {
				t.Fatalf("ParseTrustedProxies(%q) = %v, %v; want %s, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}
