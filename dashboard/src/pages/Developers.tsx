import { useEffect, useState } from 'react'
import { Link, useNavigate, useSearchParams } from 'react-router'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { api, ApiError, get, qs, type DeveloperPage, type User } from '../api'
import { dateTime, integer } from '../format'
import { useCanManageDevelopers, useSession } from '../session'
import { BudgetBar } from '../components/BudgetBar'
import { Dialog } from '../components/Dialog'
import { Money } from '../components/Money'
import { Empty, ErrorState, Skeleton } from '../components/States'

const strategies = { plan_first: 'Plan first', bedrock_only: 'Bedrock only', plan_only: 'Plan only' } as const

export default function Developers() {
  const { billing_timezone: tz } = useSession()
  const canWrite = useCanManageDevelopers()
  const [sp, setSp] = useSearchParams()
  const [search, setSearch] = useState(sp.get('q') ?? '')
  const [creating, setCreating] = useState(false)
  const set = (k: string, v: string) => {
    const n = new URLSearchParams(sp)
    if (v) n.set(k, v)
    else n.delete(k)
    n.delete('cursor')
    setSp(n, { replace: true })
  }
  // Debounced: one request when typing stops, not one per key.
  useEffect(() => {
    const t = setTimeout(() => {
      if ((sp.get('q') ?? '') !== search) set('q', search)
    }, 250)
    return () => clearTimeout(t)
  })
  const params = { q: sp.get('q'), status: sp.get('status'), routing_strategy: sp.get('strategy'), sort: sp.get('sort') ?? 'spend', order: sp.get('order') ?? 'desc', cursor: sp.get('cursor'), limit: 50 }
  const list = useQuery({ queryKey: ['developers', params], queryFn: () => get<DeveloperPage>('/developers' + qs(params)) })
  const sortBy = (k: string) => {
    const n = new URLSearchParams(sp)
    n.set('order', params.sort === k && params.order === 'desc' ? 'asc' : 'desc')
    n.set('sort', k)
    n.delete('cursor')
    setSp(n, { replace: true })
  }
  const th = (k: string, label: string, right = false) => (
    <th scope="col" className={right ? 'r' : ''} aria-sort={params.sort === k ? (params.order === 'desc' ? 'descending' : 'ascending') : 'none'}>
      <button type="button" className="sort" onClick={() => sortBy(k)}>
        {label} {params.sort === k ? (params.order === 'desc' ? '▼' : '▲') : ''}
      </button>
    </th>
  )
  return (
    <section aria-labelledby="dev-h">
      <div className="page-head">
        <h1 id="dev-h">Developers</h1>
        {canWrite && (
          <button type="button" onClick={() => setCreating(true)}>
            New developer
          </button>
        )}
      </div>
      <div className="filters" role="search">
        <label>
          Search <input type="search" value={search} placeholder="Name or email" onChange={(e) => setSearch(e.target.value)} />
        </label>
        <label>
          Status
          <select value={sp.get('status') ?? ''} onChange={(e) => set('status', e.target.value)}>
            <option value="">All</option>
            <option value="active">Active</option>
            <option value="disabled">Disabled</option>
          </select>
        </label>
        <label>
          Routing
          <select value={sp.get('strategy') ?? ''} onChange={(e) => set('strategy', e.target.value)}>
            <option value="">All</option>
            {Object.entries(strategies).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        {list.data && (
          <span className="muted">
            {integer(list.data.total)} developers · spend for {list.data.month} ({tz})
          </span>
        )}
      </div>
      {list.isError ? (
        <ErrorState error={list.error} retry={() => list.refetch()} />
      ) : list.data && list.data.items.length === 0 ? (
        <Empty>{params.q || params.status || params.routing_strategy ? 'No developer matches these filters.' : 'No developers yet. Create the first one.'}</Empty>
      ) : (
        <table className="data" aria-busy={list.isFetching}>
          <caption className="sr-only">Developers, sortable by the column buttons</caption>
          <thead>
            <tr>
              {th('name', 'Developer')}
              <th scope="col">Status</th>
              <th scope="col">Routing</th>
              {th('spend', 'Bedrock spend (month) / budget')}
              {th('plan_cost', 'Plan list price', true)}
              {th('requests', 'Requests', true)}
              <th scope="col" className="r">Keys</th>
              {th('last_used', 'Last used')}
            </tr>
          </thead>
          <tbody>
            {list.data
              ? list.data.items.map((d) => (
                  <tr key={d.id}>
                    <td>
                      <Link to={'/developers/' + d.id}>{d.name}</Link>
                      {d.email && <div className="muted small">{d.email}</div>}
                    </td>
                    <td>{d.status === 'active' ? 'Active' : <span className="badge">Disabled</span>}</td>
                    <td>{strategies[d.routing_strategy]}</td>
                    <td>
                      {d.monthly_budget_usd === null ? <Money value={d.bedrock_cost_usd} /> : <BudgetBar spent={d.bedrock_cost_usd} budget={d.monthly_budget_usd} label={`Budget of ${d.name}`} />}
                    </td>
                    <td className="r">
                      <Money value={d.plan_cost_usd} />
                    </td>
                    <td className="r num">{integer(d.requests)}</td>
                    <td className="r num">
                      {d.active_keys}
                      {d.keys !== d.active_keys && <span className="muted"> / {d.keys}</span>}
                    </td>
                    <td>{dateTime(d.last_used_at, tz)}</td>
                  </tr>
                ))
              : Array.from({ length: 8 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={8}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        {sp.get('cursor') && (
          <button type="button" className="secondary" onClick={() => set('cursor', '')}>
            First page
          </button>
        )}
        {list.data?.next_cursor && (
          <button type="button" className="secondary" onClick={() => set('cursor', list.data.next_cursor ?? '')}>
            Next page
          </button>
        )}
      </div>
      <CreateDeveloper open={creating} onClose={() => setCreating(false)} />
    </section>
  )
}

function CreateDeveloper({ open, onClose }: { open: boolean; onClose: () => void }) {
  const navigate = useNavigate()
  const qc = useQueryClient()
  const [form, setForm] = useState({ name: '', email: '', routing_strategy: 'plan_first', monthly_budget_usd: '' })
  const create = useMutation({
    mutationFn: () =>
      api<User>('POST', '/users', {
        name: form.name,
        email: form.email || undefined,
        routing_strategy: form.routing_strategy,
        monthly_budget_usd: form.monthly_budget_usd || undefined,
      }),
    onSuccess: (u) => {
      qc.invalidateQueries({ queryKey: ['developers'] })
      onClose()
      navigate('/developers/' + u.id)
    },
  })
  const err = create.error instanceof ApiError ? create.error : null
  return (
    <Dialog open={open} title="New developer" onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault()
          create.mutate()
        }}
      >
        <label>
          Name <input required value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />
        </label>
        <label>
          Email <input type="email" value={form.email} onChange={(e) => setForm({ ...form, email: e.target.value })} />
        </label>
        <label>
          Routing
          <select value={form.routing_strategy} onChange={(e) => setForm({ ...form, routing_strategy: e.target.value })}>
            {Object.entries(strategies).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        <label>
          Monthly Bedrock budget (USD) <input inputMode="decimal" placeholder="none" value={form.monthly_budget_usd} onChange={(e) => setForm({ ...form, monthly_budget_usd: e.target.value })} />
        </label>
        <p className="form-error" role="alert">
          {err ? err.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || err.message : create.error ? String(create.error) : ''}
        </p>
        <div className="actions">
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" disabled={create.isPending}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  )
}
