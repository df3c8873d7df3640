import { useState } from 'react'
import { useNavigate, useSearchParams } from 'react-router'
import { useQueryClient } from '@tanstack/react-query'
import { api, ApiError } from '../api'
import { sessionQuery } from '../session'
import { prefetchOverview } from '../overviewQueries'
import { overviewPage } from './overviewPage'

export function Login() {
  const [sp] = useSearchParams()
  const navigate = useNavigate()
  const qc = useQueryClient()
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState('')
  const [busy, setBusy] = useState(false)
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
      if (session && url.pathname === '/') {
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
      </form>
    </main>
  )
}
