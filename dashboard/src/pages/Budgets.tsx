import { useState } from 'react'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { api, ApiError, get } from '../api'
import { dateTime } from '../format'
import { useCanWrite, useSession } from '../session'
import { BudgetBar } from '../components/BudgetBar'
import { Dialog } from '../components/Dialog'
import { ErrorState, Skeleton } from '../components/States'

/** A budget that acts, as GET /budgets answers it (docs/budgets.md). */
export interface BudgetDefinition {
  id: string
  scope: 'key' | 'user' | 'team'
  subject_id: string
  window: 'daily' | 'weekly' | 'monthly'
  metric: 'bedrock' | 'plan_list' | 'all'
  amount_usd: string
  thresholds: number[]
  action: 'block' | 'downgrade' | 'plan_only' | 'notify'
  downgrade_map: Record<string, string>
  current?: { window_start: string; window_end: string; spend_usd: string; percent: number | null }
}

const metrics: Record<BudgetDefinition['metric'], string> = {
  bedrock: 'Bedrock spend',
  plan_list: 'Plan at list price',
  all: 'Bedrock + Plan',
}

const actions: Record<BudgetDefinition['action'], string> = {
  block: 'Block (429)',
  downgrade: 'Downgrade the model',
  plan_only: 'Plan only (no Bedrock)',
  notify: 'Notify only',
}

/** The form's fields, as text. */
interface Form {
  scope: string
  subject_id: string
  window: string
  metric: string
  amount_usd: string
  thresholds: string
  action: string
  downgrade: string
}

const empty: Form = { scope: 'user', subject_id: '', window: 'monthly', metric: 'bedrock', amount_usd: '', thresholds: '50, 80, 100', action: 'block', downgrade: '' }

function toForm(b: BudgetDefinition): Form {
  return {
    scope: b.scope,
    subject_id: b.subject_id,
    window: b.window,
    metric: b.metric,
    amount_usd: b.amount_usd,
    thresholds: b.thresholds.join(', '),
    action: b.action,
    downgrade: Object.entries(b.downgrade_map)
      .map(([k, v]) => k + '=' + v)
      .join(', '),
  }
}

/** The request body of a form: thresholds and the downgrade map parsed. */
export function budgetBody(f: Form, creating: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {
    window: f.window,
    metric: f.metric,
    amount_usd: f.amount_usd.trim(),
    thresholds: f.thresholds
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map(Number),
    action: f.action,
    downgrade_map: Object.fromEntries(
      f.downgrade
        .split(',')
        .map((p) => p.split('=').map((s) => s.trim()))
        .filter((p) => p.length === 2 && p[0] && p[1]),
    ),
  }
  if (creating) {
    body.scope = f.scope
    body.subject_id = f.subject_id.trim()
  }
  return body
}

/** Budgets that act: spend of the current window against each, and (for admins) create, edit, delete. */
export default function Budgets() {
  const { billing_timezone: tz } = useSession()
  const canWrite = useCanWrite()
  const qc = useQueryClient()
  const [editing, setEditing] = useState<BudgetDefinition | 'new' | null>(null)
  const list = useQuery({ queryKey: ['budgets'], queryFn: () => get<{ budgets: BudgetDefinition[] }>('/budgets') })
  const remove = useMutation({
    mutationFn: (id: string) => api<void>('DELETE', '/budgets/' + id),
    onSettled: () => qc.invalidateQueries({ queryKey: ['budgets'] }),
  })
  return (
    <section aria-labelledby="budgets-h">
      <div className="page-head">
        <h1 id="budgets-h">Budgets</h1>
        {canWrite && (
          <button type="button" onClick={() => setEditing('new')}>
            New budget
          </button>
        )}
      </div>
      {list.isError ? (
        <ErrorState error={list.error} retry={() => list.refetch()} />
      ) : (
        <table className="data" aria-busy={list.isFetching}>
          <caption className="sr-only">Budgets</caption>
          <thead>
            <tr>
              <th scope="col">Subject</th>
              <th scope="col">Window</th>
              <th scope="col">Metric</th>
              <th scope="col">Spend this window</th>
              <th scope="col">Resets ({tz})</th>
              <th scope="col">Thresholds</th>
              <th scope="col">At 100 %</th>
              {canWrite && (
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              )}
            </tr>
          </thead>
          <tbody>
            {list.data
              ? list.data.budgets.map((b) => (
                  <tr key={b.id}>
                    <td>
                      {b.scope} <span className="muted small">{b.subject_id}</span>
                    </td>
                    <td>{b.window}</td>
                    <td>{metrics[b.metric]}</td>
                    <td>
                      <BudgetBar spent={b.current?.spend_usd ?? '0'} budget={b.amount_usd} label={'Spend of the ' + b.window + ' budget of ' + b.scope + ' ' + b.subject_id} />
                    </td>
                    <td>{b.current ? dateTime(b.current.window_end, tz) : ''}</td>
                    <td>{b.thresholds.map((t) => t + ' %').join(', ')}</td>
                    <td>
                      {actions[b.action]}
                      {b.action === 'downgrade' && (
                        <span className="muted small">
                          {' '}
                          (
                          {Object.entries(b.downgrade_map)
                            .map(([k, v]) => k + ' → ' + v)
                            .join(', ')}
                          )
                        </span>
                      )}
                    </td>
                    {canWrite && (
                      <td className="r">
                        <button type="button" className="secondary" onClick={() => setEditing(b)}>
                          Edit
                        </button>{' '}
                        <button type="button" className="danger" disabled={remove.isPending} onClick={() => remove.mutate(b.id)}>
                          Delete
                        </button>
                      </td>
                    )}
                  </tr>
                ))
              : Array.from({ length: 3 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={canWrite ? 8 : 7}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
            {list.data && list.data.budgets.length === 0 && (
              <tr>
                <td colSpan={canWrite ? 8 : 7} className="muted">
                  No budgets yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      )}
      <p className="muted small">
        Windows are days, ISO weeks and months in {tz}. Each threshold notifies once per window (budget.threshold webhooks). When several
        budgets are used up, the strongest action applies: block, then Plan only, then downgrade.
      </p>
      {editing && <EditBudget budget={editing === 'new' ? null : editing} onClose={() => setEditing(null)} />}
    </section>
  )
}

function EditBudget({ budget, onClose }: { budget: BudgetDefinition | null; onClose: () => void }) {
  const qc = useQueryClient()
  const [form, setForm] = useState<Form>(budget ? toForm(budget) : empty)
  const save = useMutation({
    mutationFn: () =>
      budget ? api<BudgetDefinition>('PATCH', '/budgets/' + budget.id, budgetBody(form, false)) : api<BudgetDefinition>('POST', '/budgets', budgetBody(form, true)),
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['budgets'] })
      onClose()
    },
  })
  const err = save.error instanceof ApiError ? save.error : null
  const set = (k: keyof Form) => (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) => setForm({ ...form, [k]: e.target.value })
  return (
    <Dialog open title={budget ? 'Edit budget' : 'New budget'} onClose={onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault()
          save.mutate()
        }}
      >
        <label>
          Scope
          <select value={form.scope} onChange={set('scope')} disabled={!!budget}>
            <option value="user">User (all their keys)</option>
            <option value="key">Access key</option>
            <option value="team">Team (all its members)</option>
          </select>
        </label>
        <label>
          Subject id <input required value={form.subject_id} onChange={set('subject_id')} disabled={!!budget} autoComplete="off" />
        </label>
        <label>
          Window
          <select value={form.window} onChange={set('window')}>
            <option value="daily">Daily</option>
            <option value="weekly">Weekly (Monday first)</option>
            <option value="monthly">Monthly</option>
          </select>
        </label>
        <label>
          Metric
          <select value={form.metric} onChange={set('metric')}>
            {Object.entries(metrics).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        <label>
          Amount (USD) <input required inputMode="decimal" value={form.amount_usd} onChange={set('amount_usd')} />
        </label>
        <label>
          Thresholds (%, comma-separated) <input value={form.thresholds} onChange={set('thresholds')} />
        </label>
        <label>
          At 100 %
          <select value={form.action} onChange={set('action')}>
            {Object.entries(actions).map(([k, v]) => (
              <option key={k} value={k}>
                {v}
              </option>
            ))}
          </select>
        </label>
        {form.action === 'downgrade' && (
          <label>
            Downgrade map (from=to, comma-separated; e.g. opus=claude-sonnet-4-5)
            <input required value={form.downgrade} onChange={set('downgrade')} />
          </label>
        )}
        <p className="form-error" role="alert">
          {err ? err.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || err.message : save.error ? String(save.error) : ''}
        </p>
        <div className="actions">
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" disabled={save.isPending}>
            Save
          </button>
        </div>
      </form>
    </Dialog>
  )
}
