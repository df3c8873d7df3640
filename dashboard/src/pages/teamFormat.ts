import type { Team } from '../api'
import { money } from '../format'

/** A team's allow-list for display: "All models" when it has none. */
export function allowedModels(t: Pick<Team, 'allowed_models'>): string {
  return t.allowed_models === null ? 'All models' : t.allowed_models.join(', ')
}

/** A team's Plan budget: its amount and whether reaching it refuses requests. */
export function planBudget(t: Pick<Team, 'plan_budget_usd' | 'plan_budget_enforced'>): string {
  if (t.plan_budget_usd === null) return '—'
  return money(t.plan_budget_usd) + (t.plan_budget_enforced ? ' (enforced)' : ' (notify only)')
}

/** The allow-list field of the team form: comma-separated, "" for every model. */
export function parseModels(v: string): string[] | null {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  return list.length === 0 ? null : list
}
