// The chart library is the largest part of the bundle: pages load it in
// the background, so their numbers and tables show before it arrives. The
// placeholder has the chart's size: nothing moves when it does.
//
// No Suspense here: React 19 holds the reveal of suspended content until
// 300 ms after its fallback appeared, which kept charts (and, when a page
// suspended on them, its numbers) back long after the code was here. The
// code arrives as state instead, its render a transition that never holds
// up the numbers.
import { memo, startTransition, useEffect, useState } from 'react'
import type * as ChartsModule from './Charts'
import type { ChartProps } from './Charts'

type Charts = typeof ChartsModule

let loaded: Charts | undefined
let pending: Promise<Charts> | undefined

function loadCharts(): Promise<Charts> {
  pending ??= import('./Charts').then(
    (m) => (loaded = m),
    (e: unknown) => {
      pending = undefined // tried again by the next chart that mounts
      throw e
    },
  )
  return pending
}

/** The chart code once it is here; an Error when it could not be fetched. */
function useCharts(): Charts | Error | undefined {
  const [charts, setCharts] = useState<Charts | Error | undefined>(loaded)
  useEffect(() => {
    if (charts) return
    let live = true
    loadCharts().then(
      (m) => live && startTransition(() => setCharts(m)),
      (e: unknown) => live && setCharts(e instanceof Error ? e : new Error(String(e))),
    )
    return () => {
      live = false
    }
  }, [charts])
  return charts
}

function Placeholder({ title, height, error }: { title: string; height?: number; error?: Error }) {
  return (
    <figure className="chart" style={{ height: (height ?? 220) + 48 }} aria-busy={!error}>
      <figcaption>{title}</figcaption>
      {error && (
        <p className="muted" role="alert">
          The chart could not load ({error.message}); reload the page to try again.
        </p>
      )}
    </figure>
  )
}

/**
 * What a page's chart takes: loading draws the placeholder while the
 * chart's data is on its way, rather than an empty chart to be drawn again
 * when it comes (a chart costs tens of milliseconds of main thread).
 */
export type LazyChartProps = ChartProps & { loading?: boolean }

/** An area chart over time; re-renders only when its props change. */
export const TimeChart = memo(function TimeChart({ loading, ...p }: LazyChartProps) {
  const c = useCharts()
  if (!c || c instanceof Error || loading) return <Placeholder title={p.title} height={p.height} error={c instanceof Error ? c : undefined} />
  return <c.TimeChart {...p} />
})

/** A bar chart; re-renders only when its props change. */
export const BarsChart = memo(function BarsChart({ loading, ...p }: LazyChartProps & { horizontal?: boolean }) {
  const c = useCharts()
  if (!c || c instanceof Error || loading) return <Placeholder title={p.title} height={p.height} error={c instanceof Error ? c : undefined} />
  return <c.BarsChart {...p} />
})
