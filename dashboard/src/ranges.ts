// Report ranges in the billing time zone: half-open [from, to) instants
// whose bounds are midnights of that zone, so "today" never includes a
// piece of yesterday and a month is the calendar month budgets use.
import { date, parts, zonedTime } from './format'

export type Preset = 'today' | '7d' | '30d' | 'month' | 'last-month' | 'custom'

export const presets: { id: Preset; label: string }[] = [
  { id: 'today', label: 'Today' },
  { id: '7d', label: '7 days' },
  { id: '30d', label: '30 days' },
  { id: 'month', label: 'This month' },
  { id: 'last-month', label: 'Last month' },
  { id: 'custom', label: 'Custom' },
]

export interface Range {
  from: Date
  to: Date
  /** Days of the range, as the start instant of each day in tz. */
  days: Date[]
}

function addDays(tz: string, t: Date, n: number): Date {
  const p = parts(t, tz)
  return zonedTime(tz, p.year, p.month, p.day + n)
}

/**
 * The range of a preset at now. "7 days" and "30 days" end at the end of
 * today and include it. custom takes inclusive start and end dates
 * (YYYY-MM-DD) in tz.
 */
export function rangeOf(preset: Preset, tz: string, now: Date, custom?: { start: string; end: string }): Range {
  const p = parts(now, tz)
  const today = zonedTime(tz, p.year, p.month, p.day)
  let from: Date
  let to: Date
  switch (preset) {
    case 'today':
      from = today
      to = addDays(tz, today, 1)
      break
    case '7d':
      to = addDays(tz, today, 1)
      from = addDays(tz, today, -6)
      break
    case '30d':
      to = addDays(tz, today, 1)
      from = addDays(tz, today, -29)
      break
    case 'month':
      from = zonedTime(tz, p.year, p.month, 1)
      to = zonedTime(tz, p.year, p.month + 1, 1)
      break
    case 'last-month':
      from = zonedTime(tz, p.year, p.month - 1, 1)
      to = zonedTime(tz, p.year, p.month, 1)
      break
    case 'custom': {
      const [sy, sm, sd] = (custom?.start ?? date(today, tz)).split('-').map(Number)
      const [ey, em, ed] = (custom?.end ?? date(today, tz)).split('-').map(Number)
      from = zonedTime(tz, sy!, sm!, sd!)
      to = zonedTime(tz, ey!, em!, ed! + 1)
      break
    }
  }
  const days: Date[] = []
  for (let d = from; d < to; d = addDays(tz, d, 1)) days.push(d)
  return { from, to, days }
}

/**
 * The range a page's URL asks for (?range=30d, ?range=custom&start=…&end=…)
 * at now; an unknown or missing preset is fallback.
 */
export function rangeFromParams(
  sp: URLSearchParams,
  tz: string,
  now: Date,
  fallback: Preset = '30d',
): { preset: Preset; range: Range; start: string; end: string } {
  const asked = sp.get('range')
  const preset = presets.find((p) => p.id === asked)?.id ?? fallback
  const start = sp.get('start') ?? date(now, tz)
  const end = sp.get('end') ?? date(now, tz)
  return { preset, range: rangeOf(preset, tz, now, { start, end }), start, end }
}
