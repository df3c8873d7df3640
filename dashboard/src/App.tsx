import { lazy, Suspense, useEffect } from 'react'
import { Navigate, NavLink, Route, Routes, useLocation, useNavigate } from 'react-router'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { api, setUnauthorizedHandler, type Session } from './api'
import { Login } from './pages/Login'
import { Loading, ErrorState } from './components/States'
import { SessionContext, sessionQuery } from './session'
import { overviewPage } from './pages/overviewPage'
import { prefetchOverview } from './overviewQueries'
import { isTeamAdmin, mayManageWebhooks } from './session'

const Overview = overviewPage.Component
const Developers = lazy(() => import('./pages/Developers'))
const DeveloperDetail = lazy(() => import('./pages/DeveloperDetail'))
const Models = lazy(() => import('./pages/Models'))
const Audit = lazy(() => import('./pages/Audit'))
const SessionDetail = lazy(() => import('./pages/SessionDetail'))
const CacheEconomics = lazy(() => import('./pages/CacheEconomics'))
const Plan = lazy(() => import('./pages/Plan'))
const Admins = lazy(() => import('./pages/Admins'))
const Webhooks = lazy(() => import('./pages/Webhooks'))
const Exports = lazy(() => import('./pages/Exports'))
const Budgets = lazy(() => import('./pages/Budgets'))
const Teams = lazy(() => import('./pages/Teams'))

export function App() {
  const navigate = useNavigate()
  const location = useLocation()
  const qc = useQueryClient()

  // Any 401 means the session ended (expired, revoked, logged out
  // elsewhere): back to login, then to the page that was asked for.
  useEffect(() => {
    setUnauthorizedHandler(() => {
      const here = window.location.pathname + window.location.search
      qc.removeQueries({ predicate: (q) => q.queryKey[0] !== 'session' })
      qc.setQueryData(['session'], null)
      if (!here.startsWith('/login')) navigate('/login?next=' + encodeURIComponent(here), { replace: true })
    })
  }, [navigate, qc])

  const session = useQuery(sessionQuery)

  // A reload of the overview: its calls start with the session, not after
  // its code has loaded and rendered. (The login does the same before it
  // navigates.)
  const tz = session.data?.billing_timezone
  // A team admin has no overview (its calls are fleet-wide): see below.
  const atOverview = location.pathname === '/' && !!session.data && !isTeamAdmin(session.data.role)
  const search = location.search
  useEffect(() => {
    if (tz && atOverview) prefetchOverview(qc, tz, search)
  }, [qc, tz, atOverview, search])

  if (location.pathname === '/login') return <Login />
  if (session.isPending) return <Loading label="Loading the dashboard" />
  if (session.isError) return <ErrorState error={session.error} retry={() => session.refetch()} />
  if (!session.data) {
    return <Navigate to={'/login?next=' + encodeURIComponent(location.pathname + location.search)} replace />
  }
  return (
    <SessionContext.Provider value={session.data}>
      <Shell session={session.data}>
        <Suspense fallback={<Loading label="Loading the page" />}>
          {isTeamAdmin(session.data.role) ? (
            // A team admin reaches its team's developers (and their keys,
            // budgets, sessions) and the team itself: the routes
            // admin/roles.go holds to its team. Nothing fleet-wide.
            <Routes>
              <Route path="/" element={<Navigate to="/developers" replace />} />
              <Route path="/developers" element={<Developers />} />
              <Route path="/developers/:id" element={<DeveloperDetail />} />
              <Route path="/developers/:id/sessions/:sid" element={<SessionDetail />} />
              <Route path="/teams" element={<Teams />} />
              <Route path="*" element={<p role="alert">No such page.</p>} />
            </Routes>
          ) : (
          <Routes>
            <Route path="/" element={<Overview />} />
            <Route path="/developers" element={<Developers />} />
            <Route path="/developers/:id" element={<DeveloperDetail />} />
            <Route path="/developers/:id/sessions/:sid" element={<SessionDetail />} />
            <Route path="/cache" element={<CacheEconomics />} />
            <Route path="/teams" element={<Teams />} />
            <Route path="/models" element={<Models />} />
            <Route path="/audit" element={<Audit />} />
            <Route path="/plan" element={<Plan />} />
            <Route path="/budgets" element={<Budgets />} />
            {session.data.role === 'owner' && <Route path="/admins" element={<Admins />} />}
            <Route path="/exports" element={<Exports />} />
            {mayManageWebhooks(session.data.role) && <Route path="/webhooks" element={<Webhooks />} />}
            <Route path="*" element={<p role="alert">No such page.</p>} />
          </Routes>
          )}
        </Suspense>
      </Shell>
    </SessionContext.Provider>
  )
}

function Shell({ session, children }: { session: Session; children: React.ReactNode }) {
  const navigate = useNavigate()
  const qc = useQueryClient()
  const logout = useMutation({
    mutationFn: () => api<void>('POST', '/auth/logout'),
    onSettled: () => {
      qc.clear()
      qc.setQueryData(['session'], null)
      navigate('/login', { replace: true })
    },
  })
  return (
    <div className="shell">
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <span className="brand">ccproxy</span>
        {isTeamAdmin(session.role) ? (
          <nav aria-label="Main">
            <NavLink to="/developers">Developers</NavLink>
            <NavLink to="/teams">Team</NavLink>
          </nav>
        ) : (
        <nav aria-label="Main">
          <NavLink to="/" end>Overview</NavLink>
          <NavLink to="/developers">Developers</NavLink>
          <NavLink to="/cache">Prompt cache</NavLink>
          <NavLink to="/plan">Plan &amp; seats</NavLink>
          <NavLink to="/budgets">Budgets</NavLink>
          <NavLink to="/teams">Teams</NavLink>
          <NavLink to="/models">Models &amp; prices</NavLink>
          <NavLink to="/audit">Audit log</NavLink>
          {session.role === 'owner' && <NavLink to="/admins">Admins</NavLink>}
          <NavLink to="/exports">Exports</NavLink>
          {mayManageWebhooks(session.role) && <NavLink to="/webhooks">Webhooks</NavLink>}
        </nav>
        )}
        <span className="who" title={'Reports in ' + session.billing_timezone}>
          {session.username} ({session.role}) · {session.billing_timezone}
        </span>
        <button type="button" className="secondary" onClick={() => logout.mutate()} disabled={logout.isPending}>
          Log out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  )
}
