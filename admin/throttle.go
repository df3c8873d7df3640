package admin

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"strings"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
)

// ThrottleRule is the login throttling of one kind of key (a username, a
// client address). Attempts are counted before the password is verified;
// the first Limit attempts go through at once, the Limit-th and every later
// one start a wait of Delay, doubled for each attempt after the Limit-th, up
// to MaxDelay. The count is forgotten Forget after the last attempt. There
// is no lockout: a key can always try again after its wait.
type ThrottleRule struct {
	Limit    int
	Delay    time.Duration
	MaxDelay time.Duration
	Forget   time.Duration
}

// LoginThrottle configures login throttling; zero fields take the defaults
// (see Options.LoginThrottle).
type LoginThrottle struct {
	// Username throttles guesses at one account, from anywhere.
	Username ThrottleRule
	// Address throttles one client address (an IPv6 client's /64) guessing
	// at any accounts. Its limit is higher: several admins may share an
	// address behind a NAT.
	Address ThrottleRule
}

// defaultLoginThrottle is the login throttling when Options.LoginThrottle
// leaves fields zero: five attempts per username and twenty per address,
// then waits of one minute doubling to fifteen, forgotten after an hour.
// A guesser thus gets about a hundred tries a day per account.
func defaultLoginThrottle() LoginThrottle {
	return LoginThrottle{
		Username: ThrottleRule{Limit: 5, Delay: time.Minute, MaxDelay: 15 * time.Minute, Forget: time.Hour},
		Address:  ThrottleRule{Limit: 20, Delay: time.Minute, MaxDelay: 15 * time.Minute, Forget: time.Hour},
	}
}

func (r ThrottleRule) withDefaults(d ThrottleRule) ThrottleRule {
	if r.Limit <= 0 {
		r.Limit = d.Limit
	}
	if r.Delay <= 0 {
		r.Delay = d.Delay
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = d.MaxDelay
	}
	r.MaxDelay = max(r.MaxDelay, r.Delay)
	if r.Forget <= 0 {
		r.Forget = d.Forget
	}
	return r
}

// wait is how long a key in state st must wait at now before its next
// attempt; 0 when it may try now.
func (r ThrottleRule) wait(st store.LoginThrottle, now time.Time) time.Duration {
	if st.NextAttemptAt.After(now) {
		return st.NextAttemptAt.Sub(now)
	}
	return 0
}

// count returns st with one more attempt made at now.
func (r ThrottleRule) count(st store.LoginThrottle, now time.Time) store.LoginThrottle {
	st.Attempts++
	st.NextAttemptAt = time.Time{}
	if st.Attempts >= r.Limit {
		st.NextAttemptAt = now.Add(r.delay(st.Attempts - r.Limit))
	}
	st.ExpiresAt = now.Add(r.Forget)
	if st.NextAttemptAt.After(st.ExpiresAt) {
		st.ExpiresAt = st.NextAttemptAt
	}
	return st
}

// uncount returns st without one attempt: a successful login's own.
func (r ThrottleRule) uncount(st store.LoginThrottle, now time.Time) store.LoginThrottle {
	st.Attempts = max(st.Attempts-1, 0)
	if st.Attempts < r.Limit {
		st.NextAttemptAt = time.Time{}
	}
	return st
}

// delay is the wait after the n-th attempt past the Limit-th (from 0).
func (r ThrottleRule) delay(n int) time.Duration {
	d := r.Delay
	for range n {
		if d >= r.MaxDelay/2 {
			return r.MaxDelay
		}
		d *= 2
	}
	return min(d, r.MaxDelay)
}

// throttleKeys are the stored keys of a login attempt: its username's and
// its client address's.
func throttleKeys(username string, addr *netip.Addr) [2][]byte {
	u := sha256.Sum256([]byte("username\x00" + strings.ToLower(username)))
	a := "unknown"
	if addr != nil {
		a = addr.String()
		if addr.Is6() {
			// One IPv6 client holds a whole /64.
			a = netip.PrefixFrom(*addr, 64).Masked().String()
		}
	}
	h := sha256.Sum256([]byte("address\x00" + a))
	return [2][]byte{u[:], h[:]}
}

// countAttempt counts a login attempt for its username and client address
// before the password is verified, atomically across replicas: of any
// number of parallel attempts, only as many pass as the rules allow. It
// returns how long the client must wait instead when either key must; a
// refused attempt is not counted, so hammering does not lengthen the wait.
func (s *Server) countAttempt(ctx context.Context, keys [2][]byte, now time.Time) (time.Duration, error) {
	rules := [2]ThrottleRule{s.throttle.Username, s.throttle.Address}
	var wait time.Duration
	err := s.st.LoginThrottles().Update(ctx, now, keys[:], func(states []store.LoginThrottle) ([]store.LoginThrottle, error) {
		// The clock is read again with the rows locked, so attempts are
		// timed in the order they were counted; Postgres keeps
		// microseconds.
		now := s.now().Truncate(time.Microsecond)
		for i, st := range states {
			wait = max(wait, rules[i].wait(st, now))
		}
		if wait > 0 {
			return nil, nil
		}
		for i := range states {
			states[i] = rules[i].count(states[i], now)
		}
		return states, nil
	})
	return wait, err
}

// loginSucceeded forgets the username's attempts and takes the successful
// attempt off the address's count, so admins logging in often from one
// address never wait.
func (s *Server) loginSucceeded(ctx context.Context, keys [2][]byte, now time.Time) error {
	if err := s.st.LoginThrottles().Delete(ctx, keys[0]); err != nil {
		return err
	}
	return s.st.LoginThrottles().Update(ctx, now, keys[1:], func(states []store.LoginThrottle) ([]store.LoginThrottle, error) {
		if states[0].Attempts == 0 {
			return nil, nil
		}
		return []store.LoginThrottle{s.throttle.Address.uncount(states[0], now)}, nil
	})
}
