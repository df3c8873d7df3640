package admin

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// CookieSecure decides the Secure attribute of the session and CSRF
// cookies.
type CookieSecure string

// The CookieSecure modes.
const (
	// CookieSecureAuto marks cookies Secure when the request came over TLS,
	// or with X-Forwarded-Proto https from a trusted proxy (a load balancer
	// that terminates TLS).
	CookieSecureAuto CookieSecure = "auto"
	// CookieSecureAlways always marks them Secure: browsers then keep them
	// only for https.
	CookieSecureAlways CookieSecure = "true"
	// CookieSecureNever never does (plain-http development).
	CookieSecureNever CookieSecure = "false"
)

// ParseCookieSecure parses auto, true or false.
func ParseCookieSecure(s string) (CookieSecure, error) {
	switch c := CookieSecure(s); c {
	case CookieSecureAuto, CookieSecureAlways, CookieSecureNever:
		return c, nil
	}
	return "", errors.New("admin: cookie secure mode must be auto, true or false")
}

// ParseTrustedProxies parses a comma-separated list of CIDRs or single
// addresses (a /32 or /128); empty trusts no proxy. IPv4-mapped IPv6
// entries become IPv4, the form peer addresses are compared in.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, errors.New(strconv.Quote(f) + " is neither a CIDR nor an IP address")
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// peerAddr is the TCP peer of r, or nil when RemoteAddr is not an address
// (it always is for a real connection).
func peerAddr(r *http.Request) *netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	ip = ip.Unmap().WithZone("")
	return &ip
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the client that sent r: the TCP peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For hop that
// is not a trusted proxy. Hops left of that one were written by the client
// itself, so they are never believed: anyone can send X-Forwarded-For. When
// every hop is trusted the left-most is the client; a hop that is not an
// address stops the walk at the proxy that wrote it.
func (s *Server) clientAddr(r *http.Request) *netip.Addr {
	addr := peerAddr(r)
	if addr == nil || !s.trusted(*addr) {
		return addr
	}
	hops := forwardedValues(r.Header, "X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			return addr
		}
		addr = &hop
		if !s.trusted(hop) {
			return addr
		}
	}
	return addr
}

// forwardedValues splits every value of the header h on commas, in order.
func forwardedValues(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(f))
		}
	}
	return out
}

// parseHop reads one X-Forwarded-For entry: an address, with or without a
// port (IPv6 with a port in brackets).
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// secureCookies reports whether r's cookies get the Secure attribute.
func (s *Server) secureCookies(r *http.Request) bool {
	switch s.cookieSecure {
	case CookieSecureAlways:
		return true
	case CookieSecureNever:
		return false
	}
	if r.TLS != nil {
		return true
	}
	peer := peerAddr(r)
	if peer == nil || !s.trusted(*peer) {
		return false
	}
	// Any https among the values is enough: proxies differ in whether they
	// append or replace, and a Secure cookie over plain http only costs the
	// client its own session, while a missing Secure exposes it.
	for _, v := range forwardedValues(r.Header, "X-Forwarded-Proto") {
		if strings.EqualFold(v, "https") {
			return true
		}
	}
	return false
}
