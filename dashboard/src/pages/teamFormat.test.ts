import { describe, expect, it } from 'vitest'
import { allowedModels, parseModels, planBudget } from './teamFormat'

describe('team formatting', () => {
  it.each([
    [null, 'All models'],
    [['claude-sonnet-4-5'], 'claude-sonnet-4-5'],
    [['claude-sonnet-4-5', 'claude-haiku-4-5'], 'claude-sonnet-4-5, claude-haiku-4-5'],
  ])('allowedModels(%j) = %s', (m, want) => expect(allowedModels({ allowed_models: m })).toBe(want))

  it.each([
    [null, false, '—'],
    ['2000.00', true, '$2,000.00 (enforced)'],
    ['12.5', false, '$12.50 (notify only)'],
  ])('planBudget(%s, %s) = %s', (v, enforced, want) => expect(planBudget({ plan_budget_usd: v, plan_budget_enforced: enforced })).toBe(want))

  it.each([
    ['', null],
    [' , ', null],
    ['claude-sonnet-4-5, claude-haiku-4-5 ,', ['claude-sonnet-4-5', 'claude-haiku-4-5']],
  ])('parseModels(%j) = %j', (v, want) => expect(parseModels(v)).toEqual(want))
})
