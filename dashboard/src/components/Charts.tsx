// Charts (recharts) with the numbers behind each one in a table for screen
// readers; a chart is never the only way to read a value. Colours come
// from CSS variables so dark mode needs nothing here.
import { Area, AreaChart, Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts'

export interface Series {
  key: string
  label: string
  color: string
  /** Formats values of this series (axis, tooltip and table). */
  format: (v: number) => string
}

export interface ChartProps {
  title: string
  data: Record<string, number | string>[]
  /** The category/x field and how to print it. */
  x: string
  series: Series[]
  stacked?: boolean
  height?: number
  /** The values are counts: no fractional ticks. */
  integers?: boolean
}

function DataTable({ title, data, x, series }: ChartProps) {
  return (
    <table className="sr-only">
      <caption>{title}</caption>
      <thead>
        <tr>
          <th scope="col">{x}</th>
          {series.map((s) => (
            <th scope="col" key={s.key}>
              {s.label}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {data.map((row, i) => (
          <tr key={i}>
            <th scope="row">{String(row[x])}</th>
            {series.map((s) => (
              <td key={s.key}>{s.format(Number(row[s.key] ?? 0))}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  )
}

// The legend's height, taken from the chart's. An HTML legend rather than
// recharts' own: that one measures itself after the chart is drawn and
// draws the chart again, which doubled the cost of a chart.
const legendHeight = 24

function ChartLegend({ series }: { series: Series[] }) {
  return (
    <ul className="chart-legend" style={{ height: legendHeight }}>
      {series.map((s) => (
        <li key={s.key}>
          <span className="swatch" style={{ background: s.color }} />
          {s.label}
        </li>
      ))}
    </ul>
  )
}

export function TimeChart(p: ChartProps) {
  const fmt = p.series[0]?.format ?? String
  return (
    <figure className="chart" style={{ height: (p.height ?? 220) + 48 }}>
      <figcaption>{p.title}</figcaption>
      <div aria-hidden="true" style={{ height: (p.height ?? 220) - legendHeight }}>
        <ResponsiveContainer width="100%" height="100%">
          <AreaChart data={p.data} margin={{ top: 8, right: 8, bottom: 0, left: 8 }}>
            <CartesianGrid strokeDasharray="3 3" stroke="var(--grid)" />
            <XAxis dataKey={p.x} tick={{ fill: 'var(--muted)', fontSize: 12 }} />
            <YAxis tickFormatter={fmt} allowDecimals={!p.integers} tick={{ fill: 'var(--muted)', fontSize: 12 }} width={64} />
            <Tooltip formatter={(v, name) => [p.series.find((s) => s.label === name)?.format(Number(v)) ?? String(v), name]} contentStyle={{ background: 'var(--bg)', border: '1px solid var(--border)' }} />
            {p.series.map((s) => (
              <Area key={s.key} type="linear" dataKey={s.key} name={s.label} stackId={p.stacked ? 'a' : undefined} stroke={s.color} fill={s.color} fillOpacity={0.25} isAnimationActive={false} />
            ))}
          </AreaChart>
        </ResponsiveContainer>
      </div>
      <div aria-hidden="true">
        <ChartLegend series={p.series} />
      </div>
      <DataTable {...p} />
    </figure>
  )
}

export function BarsChart(p: ChartProps & { horizontal?: boolean }) {
  const fmt = p.series[0]?.format ?? String
  const height = p.height ?? 220
  return (
    <figure className="chart" style={{ height: height + 48 }}>
      <figcaption>{p.title}</figcaption>
      <div aria-hidden="true" style={{ height: p.series.length > 1 ? height - legendHeight : height }}>
        <ResponsiveContainer width="100%" height="100%">
          <BarChart data={p.data} layout={p.horizontal ? 'vertical' : 'horizontal'} margin={{ top: 8, right: 8, bottom: 0, left: 8 }}>
            <CartesianGrid strokeDasharray="3 3" stroke="var(--grid)" />
            {p.horizontal ? (
              <>
                <XAxis type="number" tickFormatter={fmt} allowDecimals={!p.integers} tick={{ fill: 'var(--muted)', fontSize: 12 }} />
                <YAxis type="category" dataKey={p.x} width={150} tick={{ fill: 'var(--muted)', fontSize: 12 }} />
              </>
            ) : (
              <>
                <XAxis dataKey={p.x} tick={{ fill: 'var(--muted)', fontSize: 12 }} />
                <YAxis tickFormatter={fmt} allowDecimals={!p.integers} width={64} tick={{ fill: 'var(--muted)', fontSize: 12 }} />
              </>
            )}
            <Tooltip formatter={(v, name) => [p.series.find((s) => s.label === name)?.format(Number(v)) ?? String(v), name]} contentStyle={{ background: 'var(--bg)', border: '1px solid var(--border)' }} />
            {p.series.map((s) => (
              <Bar key={s.key} dataKey={s.key} name={s.label} stackId={p.stacked ? 'a' : undefined} fill={s.color} isAnimationActive={false} />
            ))}
          </BarChart>
        </ResponsiveContainer>
      </div>
      {p.series.length > 1 && (
        <div aria-hidden="true">
          <ChartLegend series={p.series} />
        </div>
      )}
      <DataTable {...p} />
    </figure>
  )
}
