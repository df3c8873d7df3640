import { useDeferredValue, useMemo } from 'react'
import { useQuery } from '@tanstack/react-query'
import { Link } from 'react-router'
import type { TopUsers, Usage, UsageGroup } from '../api'
import { cacheHitRate, date, integer, money, moneyExact, percent, shortDate, sumMoney, tokens, totalTokens } from '../format'
import { useSession } from '../session'
import { RangePicker, useRange } from '../components/RangePicker'
import { BarsChart, TimeChart } from '../components/LazyCharts'
import type { Series } from '../components/Charts'
import { Empty, ErrorState, Skeleton } from '../components/States'
import { Money, Tokens } from '../components/Money'
import { overviewQueries } from '../overviewQueries'

const colors = { plan: 'var(--c-plan)', bedrock: 'var(--c-bedrock)', c3: 'var(--c3)', c4: 'var(--c4)', c5: 'var(--c5)' }
const usd = (v: number) => money(v.toFixed(6))
const pct = (v: number) => v.toFixed(1) + ' %'

// The charts' series, fixed so that a chart whose data did not change is
// not drawn again.
const spendSeries: Series[] = [
  { key: 'bedrock', label: 'Bedrock spend', color: colors.bedrock, format: usd },
  { key: 'plan', label: 'Plan (list price, not billed)', color: colors.plan, format: usd },
]
const tokenSeries: Series[] = [
  { key: 'input', label: 'Input', color: colors.plan, format: tokens },
  { key: 'output', label: 'Output', color: colors.bedrock, format: tokens },
  { key: 'cache_read', label: 'Cache read', color: colors.c3, format: tokens },
  { key: 'cache_write', label: 'Cache write', color: colors.c4, format: tokens },
]
const topSeries: Series[] = [
  { key: 'bedrock', label: 'Bedrock spend', color: colors.bedrock, format: usd },
  { key: 'plan', label: 'Plan (list price)', color: colors.plan, format: usd },
]
const modelSeries: Series[] = [{ key: 'requests', label: 'Requests', color: colors.c3, format: integer }]
const reasonSeries: Series[] = [{ key: 'requests', label: 'Fallbacks', color: colors.c5, format: integer }]
const errorSeries: Series[] = [{ key: 'error_rate', label: 'Error rate', color: colors.c5, format: pct }]

function sumTotals(gs: UsageGroup[]) {
  const t = { requests: 0, bedrock_requests: 0, input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cache_write_5m_tokens: 0, cache_write_1h_tokens: 0, fallbacks: 0, errors: 0, plan: '0', bedrock: '0' }
  for (const g of gs) {
    t.requests += g.requests
    t.bedrock_requests += g.bedrock_requests
    t.input_tokens += g.input_tokens
    t.output_tokens += g.output_tokens
    t.cache_read_tokens += g.cache_read_tokens
    t.cache_write_5m_tokens += g.cache_write_5m_tokens
    t.cache_write_1h_tokens += g.cache_write_1h_tokens
    t.fallbacks += g.fallbacks
    t.errors += g.errors
    t.plan = sumMoney(t.plan, g.plan_cost_usd)
    t.bedrock = sumMoney(t.bedrock, g.bedrock_cost_usd)
  }
  return t
}

function Card({ label, testid, children, hint }: { label: string; testid: string; children: React.ReactNode; hint?: string }) {
  return (
    <div className="card" data-testid={testid}>
      <div className="card-label" title={hint}>
        {label}
      </div>
      <div className="card-value">{children}</div>
    </div>
  )
}

export default function Overview() {
  const { billing_timezone: tz } = useSession()
  const { range } = useRange(tz)
  const q = overviewQueries(tz, range)
  const byProvider = useQuery(q.byProvider)
  const top = useQuery(q.top)
  const split = useQuery(q.split)
  const t = useMemo(() => (byProvider.data ? sumTotals(byProvider.data.groups) : null), [byProvider.data])

  return (
    <section aria-labelledby="overview-h">
      <div className="page-head">
        <h1 id="overview-h">Overview</h1>
        <RangePicker tz={tz} />
      </div>
      {byProvider.isError ? (
        <ErrorState error={byProvider.error} retry={() => byProvider.refetch()} />
      ) : (
        <div className="cards" aria-busy={byProvider.isFetching}>
          <Card label="Bedrock spend" testid="card-bedrock" hint="What AWS bills for Bedrock requests">
            {t ? <Money value={t.bedrock} /> : <Skeleton />}
          </Card>
          <Card label="Plan list-price equivalent" testid="card-plan" hint="What Plan requests would cost at Anthropic's list prices; not billed">
            {t ? (
              <>
                <Money value={t.plan} /> <small className="muted">not billed</small>
              </>
            ) : (
              <Skeleton />
            )}
          </Card>
          <Card label="Requests" testid="card-requests">
            {t ? <span className="num">{integer(t.requests)}</span> : <Skeleton />}
          </Card>
          <Card label="Tokens" testid="card-tokens" hint="Total tokens: input + output + cache read + cache write">
            {t ? (
              <>
                <Tokens value={totalTokens(t)} />
                <small className="muted token-split">
                  in {tokens(t.input_tokens)} · out {tokens(t.output_tokens)} · cache read {tokens(t.cache_read_tokens)} · cache write {tokens(t.cache_write_5m_tokens + t.cache_write_1h_tokens)}
                </small>
              </>
            ) : (
              <Skeleton />
            )}
          </Card>
          <Card label="Cache hit rate" testid="card-cache" hint="cache read ÷ (input + cache read + cache write)">
            {t ? <span className="num">{cacheHitRate(t)}</span> : <Skeleton />}
          </Card>
          <Card label="Fallback rate" testid="card-fallback" hint="Requests that Plan could not serve and Bedrock did">
            {t ? <span className="num">{percent(t.fallbacks, t.requests)}</span> : <Skeleton />}
          </Card>
          <Card label="Active developers" testid="card-active">
            {top.data ? <span className="num">{integer(top.data.active_users)}</span> : <Skeleton />}
          </Card>
          <Card label="Cache savings" testid="card-savings" hint="Cache reads at the input price minus their price, less the cache-write premium (5 m and 1 h priced separately)">
            {split.data ? <Money value={split.data.total.cache_savings_usd} /> : <Skeleton />}
          </Card>
        </div>
      )}
      {t && t.requests === 0 && <Empty>No requests in this range. Pick a longer range, or send traffic through the gateway.</Empty>}

      <OverviewCharts tz={tz} days={range.days} q={q} />

      <h2>Cost by component</h2>
      {split.data && (
        <table className="data">
          <caption className="sr-only">Cost by token component, per model and provider</caption>
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">Provider</th>
              <th scope="col" className="r">Input</th>
              <th scope="col" className="r">Output</th>
              <th scope="col" className="r">Cache read</th>
              <th scope="col" className="r">Cache write 5 m</th>
              <th scope="col" className="r">Cache write 1 h</th>
              <th scope="col" className="r">Total</th>
            </tr>
          </thead>
          <tbody>
            {split.data.models.map((m) => (
              <tr key={m.model + m.provider}>
                <td>{m.model}</td>
                <td>{m.provider === 'bedrock' ? 'Bedrock' : 'Plan'}</td>
                <td className="r"><Money value={m.input_usd} /></td>
                <td className="r"><Money value={m.output_usd} /></td>
                <td className="r"><Money value={m.cache_read_usd} /></td>
                <td className="r"><Money value={m.cache_write_5m_usd} /></td>
                <td className="r"><Money value={m.cache_write_1h_usd} /></td>
                <td className="r"><Money value={m.total_usd} /></td>
              </tr>
            ))}
          </tbody>
          <tfoot>
            <tr>
              <th scope="row" colSpan={2}>All</th>
              <td className="r"><Money value={split.data.total.input_usd} /></td>
              <td className="r"><Money value={split.data.total.output_usd} /></td>
              <td className="r"><Money value={split.data.total.cache_read_usd} /></td>
              <td className="r"><Money value={split.data.total.cache_write_5m_usd} /></td>
              <td className="r"><Money value={split.data.total.cache_write_1h_usd} /></td>
              <td className="r" data-testid="split-total" title={moneyExact(split.data.total.total_usd)}><Money value={split.data.total.total_usd} /></td>
            </tr>
          </tfoot>
        </table>
      )}
      {top.data && top.data.items.length > 0 && (
        <>
          <h2>Top developers</h2>
          <ol className="toplist">
            {top.data.items.map((u) => (
              <li key={u.user_id}>
                <Link to={'/developers/' + u.user_id}>{u.name}</Link> <Money value={sumMoney(u.bedrock_cost_usd, u.plan_cost_usd)} />
              </li>
            ))}
          </ol>
        </>
      )}
    </section>
  )
}

type Queries = ReturnType<typeof overviewQueries>

/**
 * The six charts. Their data is deferred: when an answer arrives the cards
 * show it first, and the charts are drawn after that paint, in a render
 * React may interrupt. Each chart's data is memoised, so an answer redraws
 * only the charts it feeds.
 */
function OverviewCharts({ tz, days: rangeDays, q }: { tz: string; days: Date[]; q: Queries }) {
  const byDay = useQuery(q.byDay)
  const byModel = useQuery(q.byModel)
  const byReason = useQuery(q.byReason)
  const top = useQuery(q.top)
  const dayData = useDeferredValue(byDay.data)
  const modelData = useDeferredValue(byModel.data)
  const reasonData = useDeferredValue(byReason.data)
  const topData = useDeferredValue(top.data)

  // The range's days as a value, so that the memos below see a new range
  // only when it is one.
  const dayKey = rangeDays.map((d) => d.toISOString()).join(',')
  const days = useMemo(() => dailySeries(dayKey, dayData, tz), [dayKey, dayData, tz])
  const topRows = useMemo(() => topDevelopers(topData), [topData])
  const models = useMemo(() => modelMix(modelData), [modelData])
  const reasons = useMemo(() => (reasonData?.groups ?? []).map((g) => ({ reason: g.key || '(none)', requests: g.requests })), [reasonData])

  // A chart waits for its answer (or its error) before it is drawn.
  const dayLoading = !dayData && !byDay.isError
  return (
    <div className="grid2">
      {byDay.isError ? (
        <ErrorState error={byDay.error} />
      ) : (
        <TimeChart title="Spend over time by provider" loading={dayLoading} data={days} x="day" stacked series={spendSeries} />
      )}
      <TimeChart title="Tokens over time" loading={dayLoading} data={days} x="day" stacked series={tokenSeries} />
      <BarsChart title="Top developers by cost" loading={!topData && !top.isError} horizontal data={topRows} x="name" stacked series={topSeries} />
      <BarsChart title="Model mix (requests)" loading={!modelData && !byModel.isError} horizontal integers data={models} x="model" series={modelSeries} />
      <BarsChart title="Fallbacks by reason" loading={!reasonData && !byReason.isError} integers data={reasons} x="reason" series={reasonSeries} />
      <TimeChart title="Error rate (status 0 or ≥ 400)" loading={dayLoading} data={days} x="day" series={errorSeries} />
    </div>
  )
}

/** Every day of the range (ISO instants, comma-separated), days without traffic as zeros. */
function dailySeries(dayKey: string, usage: Usage | undefined, tz: string) {
  const byDate = new Map((usage?.groups ?? []).map((g) => [date(g.key, tz), g]))
  return dayKey
    .split(',')
    .filter(Boolean)
    .map((iso) => {
      const d = new Date(iso)
      const g = byDate.get(date(d, tz))
      return {
        day: shortDate(d, tz),
        plan: Number(g?.plan_cost_usd ?? 0),
        bedrock: Number(g?.bedrock_cost_usd ?? 0),
        input: g?.input_tokens ?? 0,
        output: g?.output_tokens ?? 0,
        cache_read: g?.cache_read_tokens ?? 0,
        cache_write: (g?.cache_write_5m_tokens ?? 0) + (g?.cache_write_1h_tokens ?? 0),
        error_rate: g?.requests ? Math.round((g.errors / g.requests) * 1000) / 10 : 0,
      }
    })
}

function topDevelopers(top: TopUsers | undefined) {
  return (top?.items ?? []).map((u) => ({ name: u.name || u.user_id.slice(0, 8), bedrock: Number(u.bedrock_cost_usd), plan: Number(u.plan_cost_usd) }))
}

function modelMix(usage: Usage | undefined) {
  return (usage?.groups ?? [])
    .slice()
    .sort((a, b) => b.requests - a.requests)
    .slice(0, 10)
    .map((g) => ({ model: g.key, requests: g.requests }))
}
