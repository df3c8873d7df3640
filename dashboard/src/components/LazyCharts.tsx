// The chart library is the largest part of the bundle: pages load it in
// the background, so their numbers and tables show before it arrives. The
// placeholder has the chart's size: nothing moves when it does.
import { lazy, Suspense } from 'react'
import type { ChartProps } from './Charts'

const Time = lazy(() => import('./Charts').then((m) => ({ default: m.TimeChart })))
const Bars = lazy(() => import('./Charts').then((m) => ({ default: m.BarsChart })))

function Placeholder({ title, height }: { title: string; height?: number }) {
  return (
    <figure className="chart" style={{ height: (height ?? 220) + 48 }} aria-busy="true">
      <figcaption>{title}</figcaption>
    </figure>
  )
}

export function TimeChart(p: ChartProps) {
  return (
    <Suspense fallback={<Placeholder title={p.title} height={p.height} />}>
      <Time {...p} />
    </Suspense>
  )
}

export function BarsChart(p: ChartProps & { horizontal?: boolean }) {
  return (
    <Suspense fallback={<Placeholder title={p.title} height={p.height} />}>
      <Bars {...p} />
    </Suspense>
  )
}
