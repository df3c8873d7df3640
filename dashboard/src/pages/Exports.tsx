import { useId } from 'react'
import { useSearchParams } from 'react-router'
import { useQuery } from '@tanstack/react-query'
import { all, type User } from '../api'
import { useSession } from '../session'
import { exportURL, type Granularity } from '../webhooks'
import { RangePicker, useRange } from '../components/RangePicker'

const granularities: { id: Granularity; label: string; help: string }[] = [
  { id: 'daily', label: 'Daily by developer × model', help: 'one row per day (billing time zone) × developer × model × provider' },
  { id: 'requests', label: 'Per request', help: 'one row per request, oldest first — large for long ranges' },
]

/**
 * Usage as CSV (FOCUS columns, docs/exports.md): a range, a granularity and
 * optionally one developer, all kept in the URL, give a download link.
 */
export default function Exports() {
  const { billing_timezone: tz } = useSession()
  const id = useId()
  const [sp, setSp] = useSearchParams()
  const { range } = useRange(tz)
  const g: Granularity = sp.get('rows') === 'requests' ? 'requests' : 'daily'
  const user = sp.get('user') ?? ''
  const users = useQuery({ queryKey: ['users', 'all'], queryFn: () => all<User>('/users') })
  const set = (k: string, v: string) => {
    const n = new URLSearchParams(sp)
    if (v) n.set(k, v)
    else n.delete(k)
    setSp(n, { replace: true })
  }
  // A plain link, not fetch + Blob. The session is the HttpOnly cookie
  // (SameSite=Strict, same origin), which a same-origin navigation sends
  // like any API call, and a GET needs no CSRF header. The API answers with
  // Content-Disposition: attachment and streams the rows as Postgres returns
  // them, so the browser writes them to disk as they arrive: a year of
  // per-request rows never sits in this tab's memory, as a Blob would. The
  // cost: an error (an expired session's 401) shows as a failed download
  // rather than a message here; the range and filters this form builds are
  // always valid, so that is the only one left.
  const href = exportURL(g, range.from, range.to, user)
  return (
    <section aria-labelledby="exports-h">
      <div className="page-head">
        <h1 id="exports-h">Usage exports</h1>
        <RangePicker tz={tz} />
      </div>
      <div className="panel">
        <fieldset>
          <legend>Rows</legend>
          {granularities.map((x) => (
            <label key={x.id} className="inline">
              <input type="radio" name={id + '-rows'} checked={g === x.id} onChange={() => set('rows', x.id === 'daily' ? '' : x.id)} /> {x.label}
              <span className="muted small">— {x.help}</span>
            </label>
          ))}
        </fieldset>
        <label>
          Developer
          <select value={user} onChange={(e) => set('user', e.target.value)} aria-busy={users.isPending} disabled={users.isError}>
            <option value="">All developers</option>
            {users.data?.map((u) => (
              <option key={u.id} value={u.id}>
                {u.name}
                {u.email ? ` <${u.email}>` : ''}
              </option>
            ))}
            {/* A developer in the URL that the list does not hold (yet). */}
            {user && !users.data?.some((u) => u.id === user) && <option value={user}>{user}</option>}
          </select>
        </label>
        <div className="actions">
          <a className="button secondary" href={href} download data-testid="export-link" style={{ display: 'inline-block' }}>
            Download CSV
          </a>
        </div>
      </div>
      <p className="muted small">
        Columns follow FOCUS (BilledCost, ListCost, ChargePeriodStart, SubAccountId, …) plus ccproxy&apos;s own <code>x_</code> columns; Plan requests have a
        BilledCost of 0 and their list-price equivalent in ListCost. Sums match the overview for the same range. Scripts can use <code>ccproxy usage export</code>{' '}
        or the API directly (docs/exports.md).
      </p>
    </section>
  )
}
