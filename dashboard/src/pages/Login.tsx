import { useState } from 'react'
import { useNavigate, useSearchParams } from 'react-router'
import { useQuery, useQueryClient } from '@tanstack/react-query'
import { api, ApiError, get, type SSOInfo } from '../api'
import { isTeamAdmin, sessionQuery } from '../session'
import { prefetchOverview } from '../overviewQueries'
import { overviewPage } from './overviewPage'

// What the single sign-on callback's refusal codes mean to a person.
const ssoErrors: Record<string, string> = {
  restart: 'That sign-in expired or was already used. Start again.',
  refused: 'The identity provider did not confirm your sign-in. Start again.',
  unavailable: 'The identity provider cannot be reached. Try again later.',
  username_taken: 'An admin with your name exists but is not linked to your SSO identity. Ask an owner.',
  no_role: 'None of your groups gives access to ccproxy. Ask an owner.',
  disabled: 'Your admin account is disabled.',
  email: 'Your email address is not allowed to administer ccproxy.',
}

export function Login() {
  const [sp] = useSearchParams()
  const navigate = useNavigate()
  const qc = useQueryClient()
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const ssoError = sp.get('sso_error')
  const [error, setError] = useState(ssoError ? (ssoErrors[ssoError] ?? 'Single sign-on failed.') : '')
  const [busy, setBusy] = useState(false)
  // Offered when the admin service has an OpenID provider configured.
  const sso = useQuery({ queryKey: ['sso'], queryFn: () => get<SSOInfo>('/auth/sso'), staleTime: Infinity, retry: false })
  const next = sp.get('next')
  // Only paths of this site: never an open redirect.
  const target = next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/login') ? next : '/'

  async function submit(e: React.FormEvent) {
    e.preventDefault()
    setBusy(true)
    setError('')
    try {
      await api('POST', '/auth/login', { username, password })
      const session = await qc.fetchQuery({ ...sessionQuery, staleTime: 0 })
      const url = new URL(target, window.location.origin)
      if (session && url.pathname === '/' && !isTeamAdmin(session.role)) {
        // The overview's calls and its code at once: the page then renders
        // without a loading fallback and finds its data in flight.
        prefetchOverview(qc, session.billing_timezone, url.search)
        await overviewPage.preload().catch(() => {}) // the page shows the error
      }
      navigate(target, { replace: true })
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? 'Wrong username or password.'
          : err instanceof ApiError && err.status === 429
            ? 'Too many failed logins; try again later.'
            : err instanceof Error
              ? err.message
              : String(err),
      )
    } finally {
      setBusy(false)
    }
  }

  return (
    <main className="login" id="main">
      <form onSubmit={submit} aria-describedby={error ? 'login-error' : undefined}>
        <h1>ccproxy admin</h1>
        {next && <p className="muted">Log in to continue.</p>}
        <label>
          Username
          <input name="username" autoComplete="username" required value={username} onChange={(e) => setUsername(e.target.value)} autoFocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
        </label>
        <p id="login-error" className="form-error" role="alert">
          {error}
        </p>
        <button type="submit" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        {sso.data?.enabled && sso.data.login_url && (
          <>
            <p className="muted or">or</p>
            {/* A full navigation: the provider's pages, then the callback,
                which sets the session cookie and comes back to the dashboard. */}
            <a className="button secondary sso" href={sso.data.login_url}>
              Sign in with SSO
            </a>
          </>
        )}
      </form>
    </main>
  )
}
