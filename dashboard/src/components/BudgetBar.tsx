import { money } from '../format'

/** Spend against a budget; over 80 % it warns, at 100 % it is full and red. */
export function BudgetBar({ spent, budget, label }: { spent: string; budget: string | null; label: string }) {
  if (budget === null) return <span className="muted">No budget</span>
  const b = Number(budget)
  const s = Number(spent)
  const pct = b > 0 ? (s / b) * 100 : s > 0 ? 100 : 0
  const shown = Math.min(100, pct)
  const level = pct >= 100 ? 'over' : pct >= 80 ? 'warn' : 'ok'
  return (
    <div className="budget">
      <div
        className={'bar ' + level}
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(shown)}
        aria-valuetext={`${money(spent)} of ${money(budget)} (${pct.toFixed(1)} %)`}
      >
        <span style={{ width: shown + '%' }} />
      </div>
      <span className="budget-text num">
        {money(spent)} / {money(budget)} · {pct.toFixed(0)} %
      </span>
    </div>
  )
}
