import { describe, expect, it } from 'vitest'
import { seatName, utilization } from './Plan'

describe('Plan & seats formatting', () => {
  it('shows utilization fractions as whole percentages', () => {
    expect(utilization(0.42)).toBe('42 %')
    expect(utilization(0.955)).toBe('96 %')
    expect(utilization(1)).toBe('100 %')
    expect(utilization(0)).toBe('0 %')
    expect(utilization(null)).toBe('—')
    expect(utilization(undefined)).toBe('—')
  })
  it('names seats', () => {
    expect(seatName('max_5x')).toBe('Max 5×')
    expect(seatName('max_20x')).toBe('Max 20×')
    expect(seatName('pro')).toBe('Pro')
    expect(seatName('api')).toBe('API')
    expect(seatName(null)).toBe('—')
  })
})
