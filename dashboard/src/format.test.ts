import { describe, expect, it } from 'vitest'
import { cacheHitRate, date, dateTime, duration, money, moneyExact, percent, ratePercent, sumMoney, tokens, totalTokens, zonedTime, zoneName } from './format'
import { rangeOf } from './ranges'

describe('money', () => {
  it.each([
    ['0', '$0.00'],
    ['0.000000', '$0.00'],
    ['0.004999', '<$0.01'],
    ['0.005', '$0.01'],
    ['0.0066', '$0.01'],
    ['0.014999', '$0.01'],
    ['0.015', '$0.02'],
    ['12.5', '$12.50'],
    ['1234.56', '$1,234.56'],
    ['1234567.894999', '$1,234,567.89'],
    ['1234567.895', '$1,234,567.90'],
    ['-0.0033', '−<$0.01'],
    ['-12.345', '−$12.35'],
  ])('money(%s) = %s', (v, want) => expect(money(v)).toBe(want))

  it('shows a dash for no value', () => {
    expect(money(null)).toBe('—')
    expect(money(undefined)).toBe('—')
  })

  it('keeps the exact value for the title', () => {
    expect(moneyExact('0.0066')).toBe('$0.006600')
    expect(moneyExact('-0.0033')).toBe('−$0.003300')
  })

  it('adds decimal strings exactly, never in floating point', () => {
    // 0.1 + 0.2 in floating point is 0.30000000000000004.
    expect(sumMoney('0.1', '0.2')).toBe('0.300000')
    expect(sumMoney('0.0066', '0.0561', '0.00225')).toBe('0.064950')
    expect(sumMoney('-0.0033', '0.0051')).toBe('0.001800')
    expect(sumMoney(null, undefined, '')).toBe('0.000000')
    // A 7th decimal rounds half away from zero.
    expect(sumMoney('0.0000005')).toBe('0.000001')
  })
})

describe('tokens', () => {
  it.each([
    [0, '0'],
    [950, '950'],
    [999, '999'],
    [1000, '1K'],
    [12_345, '12.3K'],
    [1_250_000, '1.3M'],
    [3_400_000_000, '3.4B'],
  ])('tokens(%d) = %s', (n, want) => expect(tokens(n)).toBe(want))

  it('counts cache tokens in the total', () => {
    const t = { input_tokens: 1000, output_tokens: 100, cache_read_tokens: 2000, cache_write_5m_tokens: 400, cache_write_1h_tokens: 1000 }
    expect(totalTokens(t)).toBe(4500)
    // 2000 ÷ (1000 + 2000 + 400 + 1000)
    expect(cacheHitRate(t)).toBe('45.5 %')
  })

  it('has no rate without a base', () => {
    expect(percent(1, 0)).toBe('—')
    expect(percent(1, 3)).toBe('33.3 %')
  })

  it('formats durations', () => {
    expect(duration(850)).toBe('850 ms')
    expect(duration(12_345)).toBe('12.3 s')
    expect(duration(null)).toBe('—')
  })
})

describe('dates in a time zone', () => {
  it('prints instants as wall-clock time of the zone', () => {
    expect(dateTime('2026-03-29T00:59:00Z', 'Europe/Paris')).toBe('2026-03-29 01:59')
    // One minute later clocks jump from 02:00 to 03:00 in Paris.
    expect(dateTime('2026-03-29T01:00:00Z', 'Europe/Paris')).toBe('2026-03-29 03:00')
    expect(dateTime('2026-10-25T00:30:00Z', 'Europe/Paris')).toBe('2026-10-25 02:30')
    // The repeated hour: 02:30 again, an hour later.
    expect(dateTime('2026-10-25T01:30:00Z', 'Europe/Paris')).toBe('2026-10-25 02:30')
    expect(date('2026-12-31T23:30:00Z', 'Asia/Tokyo')).toBe('2027-01-01')
    expect(dateTime('2026-06-30T18:45:00Z', 'Asia/Kolkata')).toBe('2026-07-01 00:15')
    expect(dateTime(null, 'UTC')).toBe('—')
  })

  it('finds the instant of a wall-clock time', () => {
    expect(zonedTime('Europe/Paris', 2026, 3, 29).toISOString()).toBe('2026-03-28T23:00:00.000Z')
    expect(zonedTime('Europe/Paris', 2026, 3, 30).toISOString()).toBe('2026-03-29T22:00:00.000Z')
    // 02:30 does not exist on 2026-03-29 in Paris: the instant after the gap.
    expect(zonedTime('Europe/Paris', 2026, 3, 29, 2, 30).toISOString()).toBe('2026-03-29T01:30:00.000Z')
    // 02:30 happens twice on 2026-10-25: the first one.
    expect(zonedTime('Europe/Paris', 2026, 10, 25, 2, 30).toISOString()).toBe('2026-10-25T00:30:00.000Z')
    expect(zonedTime('America/New_York', 2026, 11, 1).toISOString()).toBe('2026-11-01T04:00:00.000Z')
    expect(zonedTime('America/New_York', 2026, 11, 2).toISOString()).toBe('2026-11-02T05:00:00.000Z')
    expect(zonedTime('Asia/Kolkata', 2026, 7, 1).toISOString()).toBe('2026-06-30T18:30:00.000Z')
    expect(zonedTime('UTC', 2026, 13, 1).toISOString()).toBe('2027-01-01T00:00:00.000Z')
  })

  it('names the zone', () => {
    expect(zoneName('UTC')).toBe('UTC')
    expect(zoneName('Europe/Paris', new Date('2026-01-15T12:00:00Z'))).toBe('CET')
    expect(zoneName('Europe/Paris', new Date('2026-07-15T12:00:00Z'))).toBe('CEST')
  })
})

describe('report ranges', () => {
  const iso = (d: Date) => d.toISOString()
  it('makes days of the billing zone, 23 and 25 hours long across DST', () => {
    const now = new Date('2026-03-29T10:00:00Z')
    const today = rangeOf('today', 'Europe/Paris', now)
    expect([iso(today.from), iso(today.to)]).toEqual(['2026-03-28T23:00:00.000Z', '2026-03-29T22:00:00.000Z'])
    expect(today.to.getTime() - today.from.getTime()).toBe(23 * 3600_000)
    const fall = rangeOf('today', 'Europe/Paris', new Date('2026-10-25T10:00:00Z'))
    expect(fall.to.getTime() - fall.from.getTime()).toBe(25 * 3600_000)
  })

  it('covers whole days up to the end of today', () => {
    const now = new Date('2026-03-29T10:00:00Z')
    const week = rangeOf('7d', 'Europe/Paris', now)
    expect([iso(week.from), iso(week.to)]).toEqual(['2026-03-22T23:00:00.000Z', '2026-03-29T22:00:00.000Z'])
    expect(week.days.length).toBe(7)
    expect(rangeOf('30d', 'UTC', now).days.length).toBe(30)
  })

  it('uses calendar months of the zone, as budgets do', () => {
    // 2026-03-01 00:30 in Tokyo is still February in UTC.
    const now = new Date('2026-02-28T15:30:00Z')
    const m = rangeOf('month', 'Asia/Tokyo', now)
    expect([iso(m.from), iso(m.to)]).toEqual(['2026-02-28T15:00:00.000Z', '2026-03-31T15:00:00.000Z'])
    const last = rangeOf('last-month', 'Asia/Tokyo', now)
    expect([iso(last.from), iso(last.to)]).toEqual(['2026-01-31T15:00:00.000Z', '2026-02-28T15:00:00.000Z'])
    const jan = rangeOf('last-month', 'UTC', new Date('2026-01-10T00:00:00Z'))
    expect([iso(jan.from), iso(jan.to)]).toEqual(['2025-12-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z'])
  })

  it('takes inclusive custom dates', () => {
    const r = rangeOf('custom', 'America/New_York', new Date(), { start: '2026-11-01', end: '2026-11-01' })
    expect([iso(r.from), iso(r.to)]).toEqual(['2026-11-01T04:00:00.000Z', '2026-11-02T05:00:00.000Z'])
  })
})

describe('ratePercent', () => {
  it.each([
    ['0.644311', '64.4 %'],
    ['0.637782', '63.8 %'],
    ['0.999950', '100.0 %'],
    ['1.000000', '100.0 %'],
    ['0.000000', '0.0 %'],
    ['0.000500', '0.1 %'],
    ['0.000499', '0.0 %'],
  ])('%s is %s', (v, want) => {
    expect(ratePercent(v)).toBe(want)
  })
  it('null is a dash', () => {
    expect(ratePercent(null)).toBe('—')
  })
})
