import { describe, expect, it } from 'vitest'
import { budgetBody } from './Budgets'

describe('budgetBody', () => {
  const form = {
    scope: 'user',
    subject_id: ' 0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69 ',
    window: 'daily',
    metric: 'all',
    amount_usd: ' 20 ',
    thresholds: '50, 80,,100',
    action: 'downgrade',
    downgrade: 'opus=claude-sonnet-4-5, claude-haiku-4-5 = claude-haiku-3, broken',
  }
  it('parses thresholds and the downgrade map, and sends scope and subject only on create', () => {
    expect(budgetBody(form, true)).toEqual({
      scope: 'user',
      subject_id: '0b7e8f3a-3c0e-4b8e-9a43-1f2d3c4b5a69',
      window: 'daily',
      metric: 'all',
      amount_usd: '20',
      thresholds: [50, 80, 100],
      action: 'downgrade',
      downgrade_map: { opus: 'claude-sonnet-4-5', 'claude-haiku-4-5': 'claude-haiku-3' },
    })
    expect(budgetBody(form, false)).not.toHaveProperty('scope')
    expect(budgetBody({ ...form, downgrade: '', thresholds: '' }, false)).toMatchObject({ thresholds: [], downgrade_map: {} })
  })
})
