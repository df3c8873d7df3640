// Formatting of money, tokens and times: one place, so every page shows the
// same number the same way. Money arrives as decimal strings and is never
// summed in floating point (see sumMoney).

/** Adds decimal strings exactly (micro-dollars as BigInt). */
export function sumMoney(...vals: (string | null | undefined)[]): string {
  let micros = 0n
  for (const v of vals) if (v) micros += toMicros(v)
  return fromMicros(micros)
}

export function toMicros(v: string): bigint {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(v.trim())
  if (!m) throw new Error(`not a decimal: ${v}`)
  const frac = ((m[3] ?? '') + '000000').slice(0, 6)
  const rest = (m[3] ?? '').slice(6)
  let n = BigInt(m[2]!) * 1_000_000n + BigInt(frac)
  // Round half away from zero on the 7th decimal.
  if (rest && Number(rest[0]) >= 5) n += 1n
  return m[1] ? -n : n
}

export function fromMicros(n: bigint): string {
  const neg = n < 0n
  const a = neg ? -n : n
  const s = (a / 1_000_000n).toString() + '.' + (a % 1_000_000n).toString().padStart(6, '0')
  return (neg ? '-' : '') + s
}

const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 2 })

/**
 * Money for display: "$1,234.56"; amounts below a cent (but not zero) show
 * as "<$0.01" (the exact value goes in a title). Rounding is half away from
 * zero on the exact decimal, not on a float.
 */
export function money(v: string | null | undefined): string {
  if (v === null || v === undefined || v === '') return '—'
  const micros = toMicros(v)
  const abs = micros < 0n ? -micros : micros
  if (abs > 0n && abs < 5_000n) return micros < 0n ? '−<$0.01' : '<$0.01'
  // Cents, rounded half away from zero.
  const cents = (abs + 5_000n) / 10_000n
  const s = usd.format(Number(cents) / 100)
  return micros < 0n ? '−' + s : s
}

/** The exact amount, for a title attribute: "$0.004321". */
export function moneyExact(v: string | null | undefined): string {
  if (!v) return ''
  const s = fromMicros(toMicros(v))
  return s.startsWith('-') ? '−$' + s.slice(1) : '$' + s
}

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 })
const whole = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 })

/** Token counts: "950", "12.3K", "1.2M", "3.4B". */
export function tokens(n: number): string {
  if (!Number.isFinite(n)) return '—'
  if (Math.abs(n) < 1000) return whole.format(n)
  return compact.format(n)
}

/** Exact integer with separators: "1,234,567". */
export function integer(n: number): string {
  return whole.format(n)
}

/** A ratio as a percentage with one decimal; "—" when the base is zero. */
export function percent(part: number, whole: number): string {
  if (!whole) return '—'
  return (Math.round((part / whole) * 1000) / 10).toFixed(1) + ' %'
}

/** Total tokens: input + output + cache read + both cache writes. */
export function totalTokens(t: {
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
}): number {
  return t.input_tokens + t.output_tokens + t.cache_read_tokens + t.cache_write_5m_tokens + t.cache_write_1h_tokens
}

/** Cache hit rate: cache reads ÷ (input + cache reads + cache writes). */
export function cacheHitRate(t: {
  input_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
}): string {
  return percent(t.cache_read_tokens, t.input_tokens + t.cache_read_tokens + t.cache_write_5m_tokens + t.cache_write_1h_tokens)
}

const dtfCache = new Map<string, Intl.DateTimeFormat>()
function dtf(tz: string, opts: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const k = tz + JSON.stringify(opts)
  let f = dtfCache.get(k)
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: tz })
    dtfCache.set(k, f)
  }
  return f
}

/** "2026-03-29 01:59" in tz (24 h clock), for tables. */
export function dateTime(iso: string | null | undefined, tz: string): string {
  if (!iso) return '—'
  const p = parts(new Date(iso), tz)
  return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:${pad(p.minute)}`
}

/** "2026-03-29" in tz. */
export function date(iso: string | Date, tz: string): string {
  const p = parts(typeof iso === 'string' ? new Date(iso) : iso, tz)
  return `${p.year}-${pad(p.month)}-${pad(p.day)}`
}

/** "29 Mar" in tz, for chart axes. */
export function shortDate(iso: string | Date, tz: string): string {
  return dtf(tz, { day: 'numeric', month: 'short' }).format(typeof iso === 'string' ? new Date(iso) : iso)
}

/** The zone's abbreviation or offset at t: "CET", "GMT+2", "UTC". */
export function zoneName(tz: string, t: Date = new Date()): string {
  const p = dtf(tz, { timeZoneName: 'short' }).formatToParts(t).find((x) => x.type === 'timeZoneName')
  return p?.value ?? tz
}

/** Milliseconds as "850 ms" or "12.3 s". */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—'
  if (ms < 1000) return `${ms} ms`
  return `${(ms / 1000).toFixed(1)} s`
}

export interface ZonedParts {
  year: number
  month: number
  day: number
  hour: number
  minute: number
  second: number
}

/** The wall-clock fields of t in tz. */
export function parts(t: Date, tz: string): ZonedParts {
  const f = dtf(tz, { year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric', hourCycle: 'h23' })
  const o: Record<string, number> = {}
  for (const p of f.formatToParts(t)) if (p.type !== 'literal') o[p.type] = Number(p.value)
  return { year: o.year!, month: o.month!, day: o.day!, hour: o.hour! % 24, minute: o.minute!, second: o.second! }
}

/**
 * The instant of a wall-clock time in tz. A time that does not exist (in a
 * spring-forward gap) resolves to the instant after the gap; a repeated one
 * (fall back) to its first occurrence. Midnight is never ambiguous in the
 * zones we use, but this holds for any time.
 */
export function zonedTime(tz: string, year: number, month: number, day: number, hour = 0, minute = 0): Date {
  const guess = Date.UTC(year, month - 1, day, hour, minute)
  // Two passes converge for every real zone: the offset at the first
  // estimate, then at the corrected one.
  let t = guess
  for (let i = 0; i < 2; i++) t = guess - offsetMs(new Date(t), tz)
  const p = parts(new Date(t), tz)
  if (p.hour !== hour % 24 || p.minute !== minute) {
    // In a gap: take the later offset, which lands after the gap.
    const later = guess - offsetMs(new Date(guess + 6 * 3600_000), tz)
    const earlier = guess - offsetMs(new Date(guess - 6 * 3600_000), tz)
    t = Math.max(later, earlier)
  } else {
    // Repeated hour: prefer the earlier occurrence.
    const earlier = guess - offsetMs(new Date(guess - 6 * 3600_000), tz)
    const e = parts(new Date(earlier), tz)
    if (earlier < t && e.hour === hour % 24 && e.minute === minute) t = earlier
  }
  return new Date(t)
}

/** tz's offset from UTC at t, in ms (positive east of Greenwich). */
export function offsetMs(t: Date, tz: string): number {
  const p = parts(t, tz)
  const asUTC = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second)
  return asUTC - Math.floor(t.getTime() / 1000) * 1000
}

function pad(n: number): string {
  return n < 10 ? '0' + n : String(n)
}

/** A rate the API gives as a decimal string ("0.644311") as a percentage with one decimal; "—" for null. */
export function ratePercent(v: string | null | undefined): string {
  if (v === null || v === undefined || v === '') return '—'
  // Tenths of a percent from the exact decimal: 0.644311 → 644.311 → 644.
  const [i = '0', f = ''] = v.split('.')
  const milli = BigInt(i) * 1000n + BigInt((f + '000').slice(0, 3))
  const rest = (f + '000').slice(3)
  const rounded = milli + (rest.charAt(0) >= '5' ? 1n : 0n)
  return `${rounded / 10n}.${rounded % 10n} %`
}
