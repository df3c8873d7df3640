import { useSearchParams } from 'react-router'
import { presets, rangeFromParams, type Preset, type Range } from '../ranges'
import { date, zoneName } from '../format'

/** The report range, kept in the URL (?range=30d, ?range=custom&start=…&end=…). */
export function useRange(tz: string, fallback: Preset = '30d'): { preset: Preset; range: Range; start: string; end: string } {
  const [sp] = useSearchParams()
  return rangeFromParams(sp, tz, new Date(), fallback)
}

export function RangePicker({ tz, fallback = '30d' }: { tz: string; fallback?: Preset }) {
  const [sp, setSp] = useSearchParams()
  const { preset, range, start, end } = useRange(tz, fallback)
  const set = (k: string, v: string) => {
    const n = new URLSearchParams(sp)
    n.set(k, v)
    setSp(n, { replace: true })
  }
  const last = new Date(range.to.getTime() - 1)
  return (
    <div className="range" role="group" aria-label="Report range">
      {presets.map((p) => (
        <button key={p.id} type="button" className={p.id === preset ? 'chip on' : 'chip'} aria-pressed={p.id === preset} onClick={() => set('range', p.id)}>
          {p.label}
        </button>
      ))}
      {preset === 'custom' && (
        <>
          <label>
            From <input type="date" value={start} onChange={(e) => set('start', e.target.value)} />
          </label>
          <label>
            to <input type="date" value={end} onChange={(e) => set('end', e.target.value)} />
          </label>
        </>
      )}
      <span className="muted range-label" data-testid="range-label">
        {date(range.from, tz)} – {date(last, tz)} ({zoneName(tz, range.from)})
      </span>
    </div>
  )
}
