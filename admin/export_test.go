package admin

import "context"

// WithHashHook makes every password hash of the server call hook with its
// slot held, so tests can fill the slots deterministically.
func WithHashHook(hook func()) func(*Options) {
	return func(o *Options) { o.hashHook = hook }
}

// RoutePatterns returns every registered route pattern and whether it
// needs a session.
func (s *Server) RoutePatterns() map[string]bool {
	out := map[string]bool{}
	for _, p := range s.patterns {
		out[p.pattern] = p.authed
	}
	return out
}

// AccessRules returns the least role of every authenticated route, by name
// ("any", "viewer", "admin", "owner").
func AccessRules() map[string]string {
	out := map[string]string{}
	for p, r := range accessRules() {
		out[p] = r.String()
	}
	return out
}

// VerifyIDToken checks a raw ID token as the single sign-on callback does
// (signature, issuer, audience, expiry, nonce).
func (s *Server) VerifyIDToken(ctx context.Context, raw, nonce string) error {
	p, err := s.oidc.discover(ctx)
	if err != nil {
		return err
	}
	_, err = s.oidc.verify(ctx, p, raw, nonce)
	return err
}

// TeamAdminRoutes returns the routes a team admin may call beyond its own
// session, and whether each names an id authorizeTeam checks.
func TeamAdminRoutes() map[string]bool {
	out := map[string]bool{}
	for p, s := range teamAdminRules() {
		out[p] = s != teamList
	}
	return out
}
