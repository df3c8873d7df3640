import { Link, useSearchParams } from 'react-router'
import { useQuery } from '@tanstack/react-query'
import { get, qs, type CacheBreakList, type CacheEconomics as Economics, type User } from '../api'
import { integer, ratePercent, tokens } from '../format'
import { useSession } from '../session'
import { RangePicker, useRange } from '../components/RangePicker'
import { Money } from '../components/Money'
import { BreaksTable, CacheCards } from '../components/Cache'
import { Empty, ErrorState, Loading } from '../components/States'

const groupings = [
  ['user', 'Developer'],
  ['model', 'Model'],
  ['day', 'Day (UTC)'],
  ['session', 'Session'],
] as const

type Grouping = (typeof groupings)[number][0]

/** Prompt-cache economics of the fleet: per developer, model, day or session, and the worst cache breaks. */
export default function CacheEconomics() {
  const { billing_timezone: tz } = useSession()
  const { range } = useRange(tz, '7d')
  const [sp, setSp] = useSearchParams()
  const by: Grouping = (groupings.find(([k]) => k === sp.get('by'))?.[0] ?? 'user') as Grouping
  // ?user=<id> narrows the page to one developer (the developer page links here).
  const user = sp.get('user') ?? undefined
  const span = { from: range.from.toISOString(), to: range.to.toISOString(), user_id: user }
  const econ = useQuery({ queryKey: ['cache-economics', by, span], queryFn: () => get<Economics>('/cache/economics' + qs({ group_by: by, ...span })) })
  const breaks = useQuery({ queryKey: ['cache-breaks', span], queryFn: () => get<CacheBreakList>('/cache/breaks' + qs({ limit: 20, ...span })) })
  const dev = useQuery({ queryKey: ['user', user], queryFn: () => get<User>('/users/' + user), enabled: !!user })
  const setBy = (k: Grouping) => {
    const n = new URLSearchParams(sp)
    n.set('by', k)
    setSp(n, { replace: true })
  }
  const groups = [...(econ.data?.groups ?? [])].sort((a, b) => Number(b.break_wasted_usd) - Number(a.break_wasted_usd) || Number(b.saved_usd) - Number(a.saved_usd))
  return (
    <section aria-labelledby="cache-h">
      <div className="page-head">
        <h1 id="cache-h">Prompt cache{user && <> · {dev.data ? <Link to={'/developers/' + user}>{dev.data.name}</Link> : '…'}</>}</h1>
        <RangePicker tz={tz} fallback="7d" />
      </div>
      {econ.isError ? (
        <ErrorState error={econ.error} retry={() => econ.refetch()} />
      ) : econ.isPending ? (
        <Loading label="Analysing the prompt cache" />
      ) : (
        <>
          <CacheCards c={econ.data.total} />
          <div className="range" role="group" aria-label="Group by" style={{ marginTop: '1rem' }}>
            {groupings.map(([k, label]) => (
              <button key={k} type="button" className={k === by ? 'chip on' : 'chip'} aria-pressed={k === by} onClick={() => setBy(k)}>
                {label}
              </button>
            ))}
          </div>
          {groups.length === 0 ? (
            <Empty>No requests in this range.</Empty>
          ) : (
            <table className="data" data-testid="cache-groups">
              <caption className="sr-only">Prompt-cache economics by {by}</caption>
              <thead>
                <tr>
                  <th scope="col">{groupings.find(([k]) => k === by)?.[1]}</th>
                  <th scope="col" className="r">Requests</th>
                  <th scope="col" className="r">Hit rate</th>
                  <th scope="col" className="r">Cache read</th>
                  <th scope="col" className="r">Saved</th>
                  <th scope="col" className="r">Never read (5 m)</th>
                  <th scope="col" className="r">Never read (1 h)</th>
                  <th scope="col" className="r">Breaks</th>
                  <th scope="col" className="r">Wasted by breaks</th>
                </tr>
              </thead>
              <tbody>
                {groups.map((g) => (
                  <tr key={g.key}>
                    <td>{label(by, g.key, g.name)}</td>
                    <td className="r num">{integer(g.requests)}</td>
                    <td className="r num">{ratePercent(g.hit_rate)}</td>
                    <td className="r num">{tokens(g.cache_read_tokens)}</td>
                    <td className="r">
                      <Money value={g.saved_usd} />
                    </td>
                    <td className="r">
                      <Money value={g.unread_5m_usd} />
                    </td>
                    <td className="r">
                      <Money value={g.unread_1h_usd} />
                    </td>
                    <td className="r num">{integer(g.breaks)}</td>
                    <td className="r">
                      <Money value={g.break_wasted_usd} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      <h2 id="worst-h">Most wasteful cache breaks</h2>
      {breaks.isError ? (
        <ErrorState error={breaks.error} retry={() => breaks.refetch()} />
      ) : breaks.isPending ? (
        <Loading label="Loading the cache breaks" />
      ) : (
        <BreaksTable breaks={breaks.data.breaks} tz={tz} labelledBy="worst-h" withSession />
      )}
    </section>
  )
}

function label(by: Grouping, key: string, name?: string) {
  switch (by) {
    case 'user':
      return <Link to={'/developers/' + key}>{name || key.slice(0, 8)}</Link>
    case 'session':
      return key ? <code>{key}</code> : <span className="muted">no session</span>
    default:
      return key
  }
}
