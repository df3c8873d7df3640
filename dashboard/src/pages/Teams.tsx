import { useState } from 'react'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { all, api, ApiError, type Strategy, type Team } from '../api'
import { money } from '../format'
import { useCanWrite } from '../session'
import { Dialog } from '../components/Dialog'
import { Empty, ErrorState, Loading } from '../components/States'
import { allowedModels, parseModels, planBudget } from './teamFormat'

function fieldErrors(e: unknown): string {
  if (e instanceof ApiError) return e.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || e.message
  return e ? String(e) : ''
}

/** Teams: members, budgets, the joining strategy and the model allow-list. */
export default function Teams() {
  const canWrite = useCanWrite()
  const teams = useQuery({ queryKey: ['teams'], queryFn: () => all<Team>('/teams') })
  const [editing, setEditing] = useState<Team | 'new' | null>(null)
  if (teams.isPending) return <Loading label="Loading teams" />
  if (teams.isError) return <ErrorState error={teams.error} retry={() => teams.refetch()} />
  return (
    <section aria-labelledby="teams-h">
      <div className="page-head">
        <h1 id="teams-h">Teams</h1>
        {canWrite && (
          <button type="button" onClick={() => setEditing('new')}>
            New team
          </button>
        )}
      </div>
      {teams.data.length === 0 ? (
        <Empty>No teams yet.</Empty>
      ) : (
        <div className="panel">
          <table className="data">
            <caption className="sr-only">Teams</caption>
            <thead>
              <tr>
                <th scope="col">Team</th>
                <th scope="col">Members</th>
                <th scope="col">Monthly Bedrock budget</th>
                <th scope="col">Plan budget</th>
                <th scope="col">Routing for new members</th>
                <th scope="col">Allowed models</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {teams.data.map((t) => (
                <tr key={t.id}>
                  <td>{t.name}</td>
                  <td>{t.members}</td>
                  <td>{t.monthly_budget_usd === null ? '—' : money(t.monthly_budget_usd)}</td>
                  <td>{planBudget(t)}</td>
                  <td>{t.routing_strategy ?? 'members keep their own'}</td>
                  <td>{allowedModels(t)}</td>
                  <td className="row-actions">
                    {canWrite && (
                      <button type="button" className="secondary" onClick={() => setEditing(t)}>
                        Edit
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Dialog open={editing !== null} title={editing === 'new' ? 'New team' : 'Edit team'} onClose={() => setEditing(null)}>
        {editing !== null && <TeamForm team={editing === 'new' ? null : editing} onDone={() => setEditing(null)} />}
      </Dialog>
    </section>
  )
}

function TeamForm({ team, onDone }: { team: Team | null; onDone: () => void }) {
  const qc = useQueryClient()
  const [f, setF] = useState({
    name: team?.name ?? '',
    monthly_budget_usd: team?.monthly_budget_usd ?? '',
    plan_budget_usd: team?.plan_budget_usd ?? '',
    plan_budget_enforced: team?.plan_budget_enforced ?? false,
    routing_strategy: team?.routing_strategy ?? '',
    allowed_models: team?.allowed_models?.join(', ') ?? '',
  })
  const save = useMutation({
    mutationFn: () => {
      const body = {
        name: f.name,
        monthly_budget_usd: f.monthly_budget_usd.trim() || null,
        plan_budget_usd: f.plan_budget_usd.trim() || null,
        plan_budget_enforced: f.plan_budget_enforced,
        routing_strategy: (f.routing_strategy || null) as Strategy | null,
        allowed_models: parseModels(f.allowed_models),
      }
      return team ? api<Team>('PATCH', '/teams/' + team.id, body) : api<Team>('POST', '/teams', body)
    },
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['teams'] })
      onDone()
    },
  })
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <label>
        Name <input required value={f.name} onChange={(e) => setF({ ...f, name: e.target.value })} />
      </label>
      <label>
        Monthly Bedrock budget (USD, empty for none) <input inputMode="decimal" value={f.monthly_budget_usd} onChange={(e) => setF({ ...f, monthly_budget_usd: e.target.value })} />
      </label>
      <label>
        Monthly Plan budget at list prices (USD, empty for none) <input inputMode="decimal" value={f.plan_budget_usd} onChange={(e) => setF({ ...f, plan_budget_usd: e.target.value })} />
      </label>
      <label className="inline">
        <input type="checkbox" checked={f.plan_budget_enforced} onChange={(e) => setF({ ...f, plan_budget_enforced: e.target.checked })} /> Enforce the Plan budget
      </label>
      <label>
        Routing strategy for developers who join
        <select value={f.routing_strategy} onChange={(e) => setF({ ...f, routing_strategy: e.target.value })}>
          <option value="">Members keep their own</option>
          <option value="plan_first">plan_first</option>
          <option value="bedrock_only">bedrock_only</option>
          <option value="plan_only">plan_only</option>
        </select>
      </label>
      <label>
        Allowed models (ids or aliases, comma-separated; empty for every model)
        <input value={f.allowed_models} onChange={(e) => setF({ ...f, allowed_models: e.target.value })} />
      </label>
      <p className="form-error" role="alert">
        {fieldErrors(save.error)}
      </p>
      <div className="actions">
        <button type="button" className="secondary" onClick={onDone}>
          Cancel
        </button>
        <button type="submit" disabled={save.isPending}>
          Save
        </button>
      </div>
    </form>
  )
}
