package notifications

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefusedTarget reports a webhook address the dispatcher will not
// connect to: loopback, private, link-local or otherwise not a public
// unicast address, while private targets are not allowed.
var ErrRefusedTarget = errors.New("notifications: refusing a non-public webhook address")

// nonPublic are the IPv4 and IPv6 ranges a webhook must not reach unless
// private targets are allowed: an admin API that posts anywhere would
// otherwise let whoever configures a webhook probe the internal network
// (cloud metadata at 169.254.169.254 above all).
var nonPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // carrier-grade NAT
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		"::/128",          // unspecified
		"::1/128",         // loopback
		"64:ff9b::/96",    // NAT64: reaches IPv4 addresses
		"64:ff9b:1::/48",  // local NAT64
		"100::/64",        // discard
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4: reaches IPv4 addresses
		"fc00::/7",        // unique local
		"fe80::/10",       // link-local
		"ff00::/8",        // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// CheckTarget returns ErrRefusedTarget for an address outside the public
// unicast space. IPv4-mapped IPv6 addresses are judged as IPv4.
func CheckTarget(ip netip.Addr) error {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return ErrRefusedTarget
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return fmt.Errorf("%w: %s", ErrRefusedTarget, ip)
		}
	}
	return nil
}

// CheckURL validates a webhook URL: http or https, a host, no user
// information (credentials belong in the signing secret), no fragment; and,
// unless allowPrivate, a host that is not a non-public IP literal or
// "localhost". Names are checked again, on every dial, against the
// addresses they resolve to.
func CheckURL(raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return errors.New("must be an http or https URL")
	}
	if u.User != nil {
		return errors.New("must not contain user information")
	}
	if u.Fragment != "" {
		return errors.New("must not contain a fragment")
	}
	if allowPrivate {
		return nil
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return errors.New("must not point at this machine (set CCPROXY_WEBHOOK_ALLOW_PRIVATE to allow non-public addresses)")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if CheckTarget(ip) != nil {
			return errors.New("must not point at a loopback, private or link-local address (set CCPROXY_WEBHOOK_ALLOW_PRIVATE to allow them)")
		}
	}
	return nil
}

// maxRedirects bounds the same-host redirects a delivery follows.
const maxRedirects = 3

// NewHTTPClient returns the client deliveries are sent with: no proxy from
// the environment (a proxy would dial for us, unchecked), every dialled
// address checked with CheckTarget unless allowPrivate, redirects only to
// the same host (at most 3), and timeout over the whole exchange.
func NewHTTPClient(timeout time.Duration, allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		// Control runs with the address about to be dialled, after name
		// resolution: the check covers what DNS answered, each time.
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrRefusedTarget, address)
			}
			return CheckTarget(ap.Addr())
		}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return errors.New("too many redirects")
			}
			if !strings.EqualFold(req.URL.Host, via[0].URL.Host) || req.URL.Scheme != via[0].URL.Scheme {
				return errors.New("redirect to another host refused")
			}
			return nil
		},
	}
}
