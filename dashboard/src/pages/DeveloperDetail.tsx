import { useState } from 'react'
import { Link, useParams } from 'react-router'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { all, api, ApiError, get, qs, type Team, type Budget, type CostSplit, type IssuedKey, type Key, type Page, type RateLimits, type SessionSummary, type Usage, type UsageRequest, type User } from '../api'
import { date, dateTime, duration, integer, money, shortDate, tokens } from '../format'
import { isTeamAdmin, useCanManageDevelopers, useCanWrite, useSession } from '../session'
import { rangeOf } from '../ranges'
import { BudgetBar } from '../components/BudgetBar'
import { Dialog } from '../components/Dialog'
import { Money, Tokens } from '../components/Money'
import { TimeChart } from '../components/LazyCharts'
import { Empty, ErrorState, Loading } from '../components/States'
import { HeadroomPanel } from '../components/HeadroomPanel'

const strategies = { plan_first: 'Plan first', bedrock_only: 'Bedrock only', plan_only: 'Plan only' } as const

function fieldErrors(e: unknown): string {
  if (e instanceof ApiError) return e.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || e.message
  return e ? String(e) : ''
}

export default function DeveloperDetail() {
  const { id = '' } = useParams()
  const user = useQuery({ queryKey: ['user', id], queryFn: () => get<User>('/users/' + id) })
  // A team admin reaches no credentials and no fleet-wide cost split.
  const teamAdmin = isTeamAdmin(useSession().role)
  if (user.isPending) return <Loading label="Loading the developer" />
  if (user.isError) return <ErrorState error={user.error} retry={() => user.refetch()} />
  const u = user.data
  return (
    <section aria-labelledby="dd-h">
      <p className="crumbs">
        <Link to="/developers">Developers</Link> /
      </p>
      <div className="page-head">
        <h1 id="dd-h">{u.name}</h1>
        {u.status === 'disabled' && <span className="badge">Disabled</span>}
      </div>
      <div className="grid2">
        <Profile user={u} />
        <BudgetPanel user={u} />
      </div>
      <Keys user={u} />
      <HeadroomPanel user={u} />
      {!teamAdmin && <Bedrock path={'/users/' + u.id + '/bedrock'} title="Bedrock credential" />}
      <Limits path={'/users/' + u.id + '/rate-limits'} title="Rate limits" scope="all of the developer's keys together" />
      <UsagePanel user={u} />
      <Requests user={u} />
      <Sessions user={u} />
    </section>
  )
}

function Profile({ user }: { user: User }) {
  const qc = useQueryClient()
  const canWrite = useCanManageDevelopers()
  const [form, setForm] = useState({ name: user.name, email: user.email ?? '', status: user.status, routing_strategy: user.routing_strategy, team_id: user.team_id ?? '' })
  const teams = useQuery({ queryKey: ['teams'], queryFn: () => all<Team>('/teams') })
  const save = useMutation({
    // The strategy and the team are sent only when changed: a developer
    // joining a team without a strategy of their own takes the team's.
    mutationFn: () =>
      api<User>('PATCH', '/users/' + user.id, {
        name: form.name,
        email: form.email || null,
        status: form.status,
        ...(form.routing_strategy !== user.routing_strategy && { routing_strategy: form.routing_strategy }),
        ...(form.team_id !== (user.team_id ?? '') && { team_id: form.team_id || null }),
      }),
    onSuccess: (u) => {
      // Joining a team may have changed the strategy.
      setForm((f) => ({ ...f, routing_strategy: u.routing_strategy, team_id: u.team_id ?? '' }))
      qc.setQueryData(['user', user.id], u)
      qc.invalidateQueries({ queryKey: ['developers'] })
    },
  })
  return (
    <form
      className="panel"
      aria-labelledby="profile-h"
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <h2 id="profile-h">Profile</h2>
      <fieldset className="bare" disabled={!canWrite}>
        <label>
          Name <input required value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />
        </label>
        <label>
          Email <input type="email" value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} />
        </label>
        <label>
          Status
          <select value={form.status} onChange={(e) => setForm({ ...form, status: e.target.value as User['status'] })}>
            <option value="active">Active</option>
            <option value="disabled">Disabled (every key refused)</option>
          </select>
        </label>
        <label>
          Team
          <select value={form.team_id} onChange={(e) => setForm({ ...form, team_id: e.target.value })}>
            <option value="">No team</option>
            {(teams.data ?? []).map((t) => (
              <option key={t.id} value={t.id}>
                {t.name}
              </option>
            ))}
            {form.team_id !== '' && !teams.data?.some((t) => t.id === form.team_id) && <option value={form.team_id}>{form.team_id}</option>}
          </select>
        </label>
        <label>
          Routing
          <select value={form.routing_strategy} onChange={(e) => setForm({ ...form, routing_strategy: e.target.value as User['routing_strategy'] })}>
            {Object.entries(strategies).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        <p className="form-error" role="alert">
          {fieldErrors(save.error)}
        </p>
        <div className="actions">
          {save.isSuccess && <span role="status">Saved.</span>}
          {canWrite && (
            <button type="submit" disabled={save.isPending}>
              Save profile
            </button>
          )}
        </div>
      </fieldset>
    </form>
  )
}

function BudgetPanel({ user }: { user: User }) {
  const qc = useQueryClient()
  const canWrite = useCanWrite()
  const { billing_timezone: tz } = useSession()
  const budget = useQuery({ queryKey: ['budget', user.id], queryFn: () => get<Budget>('/users/' + user.id + '/budget') })
  const [value, setValue] = useState(user.monthly_budget_usd ?? '')
  const save = useMutation({
    mutationFn: (v: string | null) => api<User>('PATCH', '/users/' + user.id, { monthly_budget_usd: v }),
    onSuccess: (u) => {
      qc.setQueryData(['user', user.id], u)
      qc.invalidateQueries({ queryKey: ['budget', user.id] })
      qc.invalidateQueries({ queryKey: ['developers'] })
    },
  })
  return (
    <form
      className="panel"
      aria-labelledby="budget-h"
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate(value.trim() === '' ? null : value.trim())
      }}
    >
      <h2 id="budget-h">Monthly Bedrock budget</h2>
      <div className="budget-status" data-testid="budget-status">
        {budget.data ? (
          <>
            <BudgetBar spent={budget.data.spent_usd} budget={budget.data.monthly_budget_usd} label="Bedrock spend this month against the budget" />
            <p className="muted small">
              {budget.data.month}: {money(budget.data.spent_usd)} spent
              {budget.data.remaining_usd !== null && <>, {money(budget.data.remaining_usd)} left</>}; resets {dateTime(budget.data.resets_at, tz)} ({tz})
            </p>
          </>
        ) : budget.isError ? (
          <ErrorState error={budget.error} />
        ) : (
          <p className="muted">Loading…</p>
        )}
      </div>
      <fieldset className="bare" disabled={!canWrite}>
        <label>
          Budget (USD per month, empty for none) <input name="budget" inputMode="decimal" value={value} onChange={(e) => setValue(e.target.value)} />
        </label>
        <p className="form-error" role="alert">
          {fieldErrors(save.error)}
        </p>
        <div className="actions">
          {canWrite && (
            <button type="submit" disabled={save.isPending}>
              Set budget
            </button>
          )}
        </div>
      </fieldset>
    </form>
  )
}

function Keys({ user }: { user: User }) {
  const qc = useQueryClient()
  const { billing_timezone: tz, gateway_url } = useSession()
  const canWrite = useCanManageDevelopers()
  const keys = useQuery({ queryKey: ['keys', user.id], queryFn: () => get<Page<Key>>('/users/' + user.id + '/keys?limit=1000') })
  const [issuing, setIssuing] = useState(false)
  const [name, setName] = useState('')
  const [shown, setShown] = useState<IssuedKey | null>(null)
  const [revoking, setRevoking] = useState<Key | null>(null)
  const [rotating, setRotating] = useState<Key | null>(null)
  const [override, setOverride] = useState<Key | null>(null)
  const [limiting, setLimiting] = useState<Key | null>(null)
  const [grace, setGrace] = useState('86400')
  const refresh = () => {
    qc.invalidateQueries({ queryKey: ['keys', user.id] })
    qc.invalidateQueries({ queryKey: ['developers'] })
  }
  const issue = useMutation({
    mutationFn: () => api<IssuedKey>('POST', '/users/' + user.id + '/keys', { name }),
    onSuccess: (k) => {
      setIssuing(false)
      setName('')
      setShown(k)
      refresh()
    },
  })
  const revoke = useMutation({
    mutationFn: (k: Key) => api<void>('DELETE', '/keys/' + k.id),
    onSuccess: () => {
      setRevoking(null)
      refresh()
    },
  })
  const rotate = useMutation({
    mutationFn: (k: Key) => api<IssuedKey>('POST', '/keys/' + k.id + '/rotate', { grace_period_seconds: Number(grace) }),
    onSuccess: (k) => {
      setRotating(null)
      setShown(k)
      refresh()
    },
  })
  const base = (gateway_url || window.location.origin.replace(/:\d+$/, ':8080')) + '/ak/'
  return (
    <div className="panel" aria-labelledby="keys-h">
      <div className="panel-head">
        <h2 id="keys-h">Access keys</h2>
        {canWrite && (
          <button type="button" onClick={() => setIssuing(true)} disabled={user.status !== 'active'}>
            Issue key
          </button>
        )}
      </div>
      {keys.isError ? (
        <ErrorState error={keys.error} />
      ) : keys.data && keys.data.items.length === 0 ? (
        <Empty>No keys yet. Issue one, then give the developer its ANTHROPIC_BASE_URL line.</Empty>
      ) : (
        <table className="data">
          <caption className="sr-only">Access keys of {user.name}</caption>
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(keys.data?.items ?? []).map((k) => (
              <tr key={k.id} data-testid={'key-' + k.prefix}>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{k.name || <span className="muted">—</span>}</td>
                <td>
                  {k.status}
                  {k.status === 'rotating' && k.grace_until && <span className="muted small"> until {dateTime(k.grace_until, tz)}</span>}
                </td>
                <td>{dateTime(k.created_at, tz)}</td>
                <td>{dateTime(k.last_used_at, tz)}</td>
                <td className="row-actions">
                  {canWrite && k.status === 'active' && (
                    <>
                      <button type="button" className="secondary" onClick={() => setOverride(k)}>
                        Bedrock override
                      </button>
                      <button type="button" className="secondary" onClick={() => setLimiting(k)}>
                        Limits
                      </button>
                      <button type="button" className="secondary" onClick={() => setRotating(k)}>
                        Rotate
                      </button>
                    </>
                  )}
                  {canWrite && k.status !== 'revoked' && (
                    <button type="button" className="danger" onClick={() => setRevoking(k)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Dialog open={issuing} title="Issue an access key" onClose={() => setIssuing(false)}>
        <form
          onSubmit={(e) => {
            e.preventDefault()
            issue.mutate()
          }}
        >
          <label>
            Name (e.g. the laptop it is for) <input value={name} onChange={(e) => setName(e.target.value)} />
          </label>
          <p className="form-error" role="alert">
            {fieldErrors(issue.error)}
          </p>
          <div className="actions">
            <button type="button" className="secondary" onClick={() => setIssuing(false)}>
              Cancel
            </button>
            <button type="submit" disabled={issue.isPending}>
              Issue
            </button>
          </div>
        </form>
      </Dialog>
      <Dialog open={shown !== null} title="New access key" onClose={() => setShown(null)}>
        {shown && <ShownKey issued={shown} line={`export ANTHROPIC_BASE_URL=${base}${shown.key}`} onClose={() => setShown(null)} />}
      </Dialog>
      <Dialog open={revoking !== null} title="Revoke this key?" onClose={() => setRevoking(null)}>
        {revoking && (
          <form
            onSubmit={(e) => {
              e.preventDefault()
              revoke.mutate(revoking)
            }}
          >
            <p>
              Requests with <code>{revoking.prefix}…</code> are refused within seconds, everywhere. This cannot be undone.
            </p>
            <p className="form-error" role="alert">
              {fieldErrors(revoke.error)}
            </p>
            <div className="actions">
              <button type="button" className="secondary" onClick={() => setRevoking(null)}>
                Cancel
              </button>
              <button type="submit" className="danger" disabled={revoke.isPending}>
                Revoke key
              </button>
            </div>
          </form>
        )}
      </Dialog>
      <Dialog open={rotating !== null} title="Rotate this key" onClose={() => setRotating(null)}>
        {rotating && (
          <form
            onSubmit={(e) => {
              e.preventDefault()
              rotate.mutate(rotating)
            }}
          >
            <p>
              A new key replaces <code>{rotating.prefix}…</code>; the old one keeps working during the grace period.
            </p>
            <label>
              Grace period
              <select value={grace} onChange={(e) => setGrace(e.target.value)}>
                <option value="0">None (revoke now)</option>
                <option value="3600">1 hour</option>
                <option value="86400">1 day</option>
                <option value="604800">7 days</option>
              </select>
            </label>
            <p className="form-error" role="alert">
              {fieldErrors(rotate.error)}
            </p>
            <div className="actions">
              <button type="button" className="secondary" onClick={() => setRotating(null)}>
                Cancel
              </button>
              <button type="submit" disabled={rotate.isPending}>
                Rotate
              </button>
            </div>
          </form>
        )}
      </Dialog>
      <Dialog open={limiting !== null} title="Rate limits for this key" onClose={() => setLimiting(null)}>
        {limiting && (
          <Limits path={'/keys/' + limiting.id + '/rate-limits'} title={`Limits of ${limiting.prefix}…`} scope="this key alone" inDialog onDone={() => setLimiting(null)} />
        )}
      </Dialog>
      <Dialog open={override !== null} title="Bedrock credential for this key" onClose={() => setOverride(null)}>
        {override && <Bedrock path={'/keys/' + override.id + '/bedrock'} title={`Override for ${override.prefix}…`} inDialog onDone={() => setOverride(null)} />}
      </Dialog>
    </div>
  )
}

function ShownKey({ issued, line, onClose }: { issued: IssuedKey; line: string; onClose: () => void }) {
  const [copied, setCopied] = useState('')
  const copy = async (what: string, text: string) => {
    try {
      await navigator.clipboard.writeText(text)
      setCopied(what)
    } catch {
      setCopied('')
    }
  }
  return (
    <div>
      <p>
        <strong>Shown once.</strong> Copy it now: ccproxy keeps only a hash.
      </p>
      <label>
        Access key
        <input readOnly value={issued.key} data-testid="issued-key" onFocus={(e) => e.target.select()} />
      </label>
      <button type="button" className="secondary" onClick={() => copy('key', issued.key)}>
        Copy key
      </button>
      <p>Give the developer this line (their own Anthropic credential stays as it is):</p>
      <pre className="export" data-testid="export-line">{line}</pre>
      <button type="button" className="secondary" onClick={() => copy('line', line)}>
        Copy line
      </button>
      <p role="status" className="muted">
        {copied && `Copied the ${copied}.`}
      </p>
      <div className="actions">
        <button type="button" onClick={onClose}>
          Done
        </button>
      </div>
    </div>
  )
}

const limitFields = [
  ['requests_per_minute', 'Requests per minute'],
  ['input_tokens_per_minute', 'Input tokens per minute'],
  ['output_tokens_per_minute', 'Output tokens per minute'],
] as const

/** Per-minute limits of a user or key: blank means no limit; saving with all blank removes them. */
function Limits({ path, title, scope, inDialog, onDone }: { path: string; title: string; scope: string; inDialog?: boolean; onDone?: () => void }) {
  const qc = useQueryClient()
  const current = useQuery({ queryKey: ['rate-limits', path], queryFn: () => get<RateLimits>(path) })
  const [form, setForm] = useState<Record<string, string> | null>(null)
  const values: Record<string, string> =
    form ?? Object.fromEntries(limitFields.map(([f]) => [f, current.data?.[f] == null ? '' : String(current.data[f])]))
  const save = useMutation({
    mutationFn: () =>
      api<RateLimits>('PUT', path, Object.fromEntries(limitFields.map(([f]) => [f, (values[f] ?? '').trim() === '' ? null : Number(values[f])]))),
    onSuccess: (l) => {
      qc.setQueryData(['rate-limits', path], l)
      setForm(null)
      onDone?.()
    },
  })
  const canWrite = useCanWrite()
  const id = path.replace(/\W/g, '-')
  const set = current.data && limitFields.some(([f]) => current.data[f] != null)
  return (
    <form
      className={inDialog ? '' : 'panel'}
      aria-labelledby={id}
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <h2 id={id} className={inDialog ? 'sr-only' : ''}>
        {title}
      </h2>
      <p className="muted" data-testid={'limits-status' + id}>
        {current.isPending
          ? 'Loading…'
          : set
            ? `In effect for ${scope}: ` +
              limitFields
                .filter(([f]) => current.data?.[f] != null)
                .map(([f, label]) => `${integer(current.data?.[f] ?? 0)} ${label.toLowerCase()}`)
                .join(', ') +
              '. Every gateway replica shares them; over a limit, requests get 429 with retry-after.'
            : `None set: ${scope} may send as much as Plan or Bedrock allow.`}
      </p>
      {canWrite && limitFields.map(([f, label]) => (
        <label key={f}>
          {label}{' '}
          <input
            type="number"
            min={1}
            step={1}
            placeholder="no limit"
            value={values[f]}
            onChange={(e) => setForm({ ...values, [f]: e.target.value })}
          />
        </label>
      ))}
      <p className="form-error" role="alert">
        {fieldErrors(save.error)}
      </p>
      {canWrite && (
        <div className="actions">
          <button type="submit" disabled={save.isPending}>
            Save limits
          </button>
        </div>
      )}
    </form>
  )
}

function Bedrock({ path, title, inDialog, onDone }: { path: string; title: string; inDialog?: boolean; onDone?: () => void }) {
  const qc = useQueryClient()
  const cred = useQuery({
    queryKey: ['bedrock', path],
    queryFn: async () => {
      try {
        return await get<{ type: string; region: string; updated_at: string }>(path)
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return null
        throw e
      }
    },
  })
  const [form, setForm] = useState({ type: 'api_key', region: 'us-east-1', api_key: '' })
  const put = useMutation({
    mutationFn: () => api<void>('PUT', path, form.type === 'api_key' ? form : { type: form.type, region: form.region }),
    onSuccess: () => {
      setForm({ ...form, api_key: '' })
      qc.invalidateQueries({ queryKey: ['bedrock', path] })
      onDone?.()
    },
  })
  const del = useMutation({
    mutationFn: () => api<void>('DELETE', path),
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['bedrock', path] })
      onDone?.()
    },
  })
  const { billing_timezone: tz } = useSession()
  const canWrite = useCanWrite()
  const id = path.replace(/\W/g, '-')
  return (
    <form
      className={inDialog ? '' : 'panel'}
      aria-labelledby={id}
      onSubmit={(e) => {
        e.preventDefault()
        put.mutate()
      }}
    >
      <h2 id={id} className={inDialog ? 'sr-only' : ''}>
        {title}
      </h2>
      <p className="muted">
        {cred.data === undefined
          ? 'Loading…'
          : cred.data === null
            ? 'None set.'
            : `Current: ${cred.data.type === 'api_key' ? 'Bedrock API key' : 'AWS default credential chain'} in ${cred.data.region}, set ${dateTime(cred.data.updated_at, tz)}. The key itself is never shown.`}
      </p>
      <fieldset className="bare" disabled={!canWrite}>
        <fieldset>
          <legend>Authentication</legend>
          <label className="inline">
            <input type="radio" name={id + '-type'} checked={form.type === 'api_key'} onChange={() => setForm({ ...form, type: 'api_key' })} /> Bedrock API key
          </label>
          <label className="inline">
            <input type="radio" name={id + '-type'} checked={form.type === 'aws_default_chain'} onChange={() => setForm({ ...form, type: 'aws_default_chain' })} /> AWS default chain (the gateway's IAM role)
          </label>
      </fieldset>
      <label>
        Region <input required pattern="[a-z]{2}(-[a-z]+)+-[0-9]{1,2}" value={form.region} onChange={(e) => setForm({ ...form, region: e.target.value })} />
      </label>
      {form.type === 'api_key' && (
        <label>
          API key <input type="password" autoComplete="off" required value={form.api_key} onChange={(e) => setForm({ ...form, api_key: e.target.value })} />
        </label>
      )}
      <p className="form-error" role="alert">
        {fieldErrors(put.error) || fieldErrors(del.error)}
      </p>
      <div className="actions">
        {canWrite && cred.data && (
          <button type="button" className="danger" onClick={() => del.mutate()} disabled={del.isPending}>
            Remove
          </button>
        )}
        {canWrite && (
          <button type="submit" disabled={put.isPending}>
            Save credential
          </button>
        )}
      </div>
      </fieldset>
    </form>
  )
}

function UsagePanel({ user }: { user: User }) {
  const { billing_timezone: tz } = useSession()
  const r = rangeOf('30d', tz, new Date())
  const span = { from: r.from.toISOString(), to: r.to.toISOString(), user_id: user.id }
  const days = useQuery({ queryKey: ['usage', 'day', span, tz], queryFn: () => get<Usage>('/usage' + qs({ ...span, group_by: 'day', tz })) })
  const teamAdmin = isTeamAdmin(useSession().role)
  const split = useQuery({ queryKey: ['cost-split', span], queryFn: () => get<CostSplit>('/usage/cost-split' + qs(span)), enabled: !teamAdmin })
  const byDate = new Map((days.data?.groups ?? []).map((g) => [date(g.key, tz), g]))
  const data = r.days.map((d) => {
    const g = byDate.get(date(d, tz))
    return { day: shortDate(d, tz), bedrock: Number(g?.bedrock_cost_usd ?? 0), plan: Number(g?.plan_cost_usd ?? 0) }
  })
  const usd = (v: number) => money(v.toFixed(6))
  const t = split.data?.total
  return (
    <div className="panel" aria-labelledby="usage-h">
      <h2 id="usage-h">Usage, last 30 days</h2>
      <div className="grid2">
        <TimeChart title="Cost per day" data={data} x="day" stacked series={[
          { key: 'bedrock', label: 'Bedrock spend', color: 'var(--c-bedrock)', format: usd },
          { key: 'plan', label: 'Plan (list price, not billed)', color: 'var(--c-plan)', format: usd },
        ]} />
        {!teamAdmin && <div>
          <h3>Cost split</h3>
          {t ? (
            <dl className="split">
              <dt>Input</dt><dd><Money value={t.input_usd} /></dd>
              <dt>Output</dt><dd><Money value={t.output_usd} /></dd>
              <dt>Cache read</dt><dd><Money value={t.cache_read_usd} /></dd>
              <dt>Cache write 5 m</dt><dd><Money value={t.cache_write_5m_usd} /></dd>
              <dt>Cache write 1 h</dt><dd><Money value={t.cache_write_1h_usd} /></dd>
              <dt>Total</dt><dd><strong><Money value={t.total_usd} /></strong></dd>
              <dt>Cache savings</dt><dd><Money value={t.cache_savings_usd} /></dd>
            </dl>
          ) : split.isError ? (
            <ErrorState error={split.error} />
          ) : (
            <p className="muted">Loading…</p>
          )}
        </div>}
      </div>
    </div>
  )
}

function Requests({ user }: { user: User }) {
  const { billing_timezone: tz } = useSession()
  const reqs = useQuery({ queryKey: ['requests', user.id], queryFn: () => get<Page<UsageRequest>>('/usage/requests' + qs({ user_id: user.id, limit: 25 })), refetchInterval: 10_000 })
  return (
    <div className="panel" aria-labelledby="req-h">
      <h2 id="req-h">Recent requests</h2>
      {reqs.isError ? (
        <ErrorState error={reqs.error} />
      ) : reqs.data && reqs.data.items.length === 0 ? (
        <Empty>No requests yet. They appear here seconds after the developer sends one.</Empty>
      ) : (
        <table className="data" data-testid="recent-requests">
          <caption className="sr-only">Latest requests of {user.name}</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Model</th>
              <th scope="col">Provider</th>
              <th scope="col" className="r">Tokens in / out / cache</th>
              <th scope="col" className="r">Cost</th>
              <th scope="col" className="r">TTFT</th>
              <th scope="col">Status</th>
              <th scope="col">Fallback</th>
            </tr>
          </thead>
          <tbody>
            {(reqs.data?.items ?? []).map((r) => (
              <tr key={r.request_id}>
                <td>{dateTime(r.event_time, tz)}</td>
                <td>{r.requested_model}</td>
                <td>{r.provider === 'bedrock' ? `Bedrock ${r.region}` : 'Plan'}</td>
                <td className="r num">
                  <Tokens value={r.input_tokens} /> / <Tokens value={r.output_tokens} /> / <Tokens value={r.cache_read_tokens + r.cache_write_5m_tokens + r.cache_write_1h_tokens} />
                </td>
                <td className="r">
                  <Money value={r.cost_usd} />
                </td>
                <td className="r num">{duration(r.ttft_ms)}</td>
                <td className="num">{r.status}</td>
                <td>{r.fallback ? r.fallback_reason || 'yes' : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
}

function Sessions({ user }: { user: User }) {
  const { billing_timezone: tz } = useSession()
  const [sort, setSort] = useState<'recent' | 'cost'>('cost')
  const s = useQuery({ queryKey: ['sessions', user.id, sort], queryFn: () => get<Page<SessionSummary>>('/users/' + user.id + '/sessions?limit=20&sort=' + sort) })
  return (
    <div className="panel" aria-labelledby="sess-h">
      <h2 id="sess-h">Claude Code sessions, last 30 days</h2>
      <p>
        <Link to={'/cache?range=30d&by=session&user=' + user.id}>Prompt-cache economics of {user.name}</Link>
      </p>
      <div className="range" role="group" aria-label="Sort sessions">
        {(
          [
            ['cost', 'Most expensive'],
            ['recent', 'Most recent'],
          ] as const
        ).map(([k, label]) => (
          <button key={k} type="button" className={k === sort ? 'chip on' : 'chip'} aria-pressed={k === sort} onClick={() => setSort(k)}>
            {label}
          </button>
        ))}
      </div>
      {s.isError ? (
        <ErrorState error={s.error} />
      ) : s.data && s.data.items.length === 0 ? (
        <Empty>No sessions. Claude Code sends a session id with every request; requests without one are not grouped.</Empty>
      ) : (
        <table className="data">
          <caption className="sr-only">Sessions of {user.name}</caption>
          <thead>
            <tr>
              <th scope="col">First seen</th>
              <th scope="col">Last seen</th>
              <th scope="col" className="r">Agents</th>
              <th scope="col" className="r">Requests</th>
              <th scope="col" className="r">Tokens</th>
              <th scope="col" className="r">Cost</th>
              <th scope="col">Models</th>
            </tr>
          </thead>
          <tbody>
            {(s.data?.items ?? []).map((x) => (
              <tr key={x.session_id} title={x.session_id}>
                <td>
                  <Link to={'/developers/' + user.id + '/sessions/' + encodeURIComponent(x.session_id)}>{dateTime(x.first_at, tz)}</Link>
                </td>
                <td>{dateTime(x.last_at, tz)}</td>
                <td className="r num">{integer(x.agents)}</td>
                <td className="r num">{integer(x.requests)}</td>
                <td className="r num">{tokens(x.input_tokens + x.output_tokens + x.cache_read_tokens + x.cache_write_5m_tokens + x.cache_write_1h_tokens)}</td>
                <td className="r">
                  <Money value={x.cost_usd} />
                </td>
                <td>{x.models.join(', ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  )
}
