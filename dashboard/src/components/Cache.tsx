import { Link } from 'react-router'
import type { CacheBreak, CacheTotals } from '../api'
import { dateTime, integer, ratePercent, tokens } from '../format'
import { Money } from './Money'
import { Empty } from './States'

/** A figure card, as on the overview. */
export function Card({ label, testid, hint, children }: { label: string; testid: string; hint?: string; children: React.ReactNode }) {
  return (
    <div className="card" data-testid={testid} title={hint}>
      <div className="card-label">{label}</div>
      <div className="card-value">{children}</div>
    </div>
  )
}

/** The cache figures of a group of requests (docs/sessions.md defines them). */
export function CacheCards({ c }: { c: CacheTotals }) {
  return (
    <div className="cards">
      <Card label="Cache hit rate" testid="cache-hit" hint="cache read ÷ (cache read + uncached input + cache writes)">
        <span className="num">{ratePercent(c.hit_rate)}</span>
      </Card>
      <Card label="Saved by caching" testid="cache-saved" hint="Cost without prompt caching minus the cost">
        <Money value={c.saved_usd} />
      </Card>
      <Card label="Writes never read" testid="cache-unread" hint="Cache writes that no later request of the same agent and model read within their lifetime">
        <Money value={sum(c.unread_5m_usd, c.unread_1h_usd)} />
        <small className="muted token-split">
          5 m {tokens(c.unread_5m_tokens)} · <Money value={c.unread_5m_usd} /> — 1 h {tokens(c.unread_1h_tokens)} · <Money value={c.unread_1h_usd} />
          {c.pending_5m_tokens + c.pending_1h_tokens > 0 && <> — {tokens(c.pending_5m_tokens + c.pending_1h_tokens)} still within their lifetime</>}
        </small>
      </Card>
      <Card label="Cache breaks" testid="cache-breaks" hint="Turns whose cache read collapsed while the prefix was warm, and what re-sending the prefix cost">
        <span className="num">{integer(c.breaks)}</span> <small className="muted">wasting</small> <Money value={c.break_wasted_usd} />
      </Card>
    </div>
  )
}

function sum(a: string, b: string): string {
  // Both have at most 6 decimals.
  const micros = (v: string) => {
    const neg = v.startsWith('-')
    const [i = '0', f = ''] = (neg ? v.slice(1) : v).split('.')
    const m = BigInt(i) * 1_000_000n + BigInt((f + '000000').slice(0, 6))
    return neg ? -m : m
  }
  const t = micros(a) + micros(b)
  const abs = t < 0n ? -t : t
  return (t < 0n ? '-' : '') + `${abs / 1_000_000n}.${String(abs % 1_000_000n).padStart(6, '0')}`
}

/** Cache breaks with the turn, the tokens lost and the dollars wasted. */
export function BreaksTable({ breaks, tz, labelledBy, withSession }: { breaks: CacheBreak[]; tz: string; labelledBy: string; withSession?: boolean }) {
  if (breaks.length === 0) return <Empty>No cache breaks: every turn read back the prefix its previous turn left warm.</Empty>
  return (
    <table className="data" aria-labelledby={labelledBy} data-testid="cache-breaks-table">
      <thead>
        <tr>
          <th scope="col">Time</th>
          {withSession && <th scope="col">Session</th>}
          <th scope="col">Agent</th>
          <th scope="col">Model</th>
          <th scope="col" className="r">Turn</th>
          <th scope="col" className="r">Expected warm</th>
          <th scope="col" className="r">Read</th>
          <th scope="col" className="r">Wasted</th>
        </tr>
      </thead>
      <tbody>
        {breaks.map((b) => (
          <tr key={b.request_id} title={'Request ' + b.request_id + ', ' + (b.gap_ms / 1000).toFixed(1) + ' s after the previous turn'}>
            <td>{dateTime(b.time, tz)}</td>
            {withSession && (
              <td>
                <Link to={'/developers/' + b.user_id + '/sessions/' + encodeURIComponent(b.session_id)}>
                  <code>{b.session_id.slice(0, 8)}</code>
                </Link>
              </td>
            )}
            <td>{b.agent_id ? <code>{b.agent_id}</code> : 'Main agent'}</td>
            <td>{b.model}</td>
            <td className="r num" data-testid="break-turn">
              {b.turn}
            </td>
            <td className="r num">{integer(b.expected_tokens)}</td>
            <td className="r num">{integer(b.cache_read_tokens)}</td>
            <td className="r" data-testid="break-wasted">
              <Money value={b.wasted_usd} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}
