import { Link, useSearchParams } from 'react-router'
import { useQuery } from '@tanstack/react-query'
import { get, qs, type FleetHeadroom, type Page, type Seat, type SeatType, type Seats } from '../api'
import { dateTime, integer } from '../format'
import { useSession } from '../session'
import { Money } from '../components/Money'
import { Empty, ErrorState, Skeleton } from '../components/States'

/** A utilization fraction as a whole percentage ("42 %"); "—" when unknown. */
export function utilization(u: number | null | undefined): string {
  return u === null || u === undefined ? '—' : `${Math.round(u * 100)} %`
}

const seatNames: Record<SeatType, string> = { pro: 'Pro', max_5x: 'Max 5×', max_20x: 'Max 20×', api: 'API' }

export function seatName(s: SeatType | null | undefined): string {
  return s ? seatNames[s] : '—'
}

function recommendation(s: Seat): string {
  switch (s.recommendation) {
    case 'keep':
      return 'Keep'
    case 'set_seat':
      return 'Set a seat type'
    case 'upgrade':
      return 'Upgrade to ' + seatName(s.recommended_seat)
    case 'downgrade':
      return 'Downgrade to ' + seatName(s.recommended_seat)
    case 'switch':
      return 'Switch to ' + seatName(s.recommended_seat)
  }
}

function Meter({ value, threshold }: { value: number | null; threshold: number | null }) {
  if (value === null) return <span className="muted">—</span>
  const pct = Math.min(100, Math.max(0, value * 100))
  const near = threshold !== null && threshold > 0 && value >= threshold
  return (
    <span
      role="meter"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(pct)}
      aria-label="Utilization"
      className="headroom-meter"
      title={near ? 'At or above the pre-emptive failover threshold' : undefined}
    >
      <span className={'bar' + (near ? ' over' : '')}>
        <span style={{ width: pct + '%' }} />
      </span>
      <span className="label">{utilization(value)}</span>
    </span>
  )
}

export default function Plan() {
  const { billing_timezone: tz } = useSession()
  const [sp, setSp] = useSearchParams()
  const month = sp.get('month') ?? ''
  const headroom = useQuery({ queryKey: ['headroom'], queryFn: () => get<Page<FleetHeadroom>>('/headroom') })
  const seats = useQuery({ queryKey: ['seats', month], queryFn: () => get<Seats>('/seats' + qs({ month })) })
  return (
    <section aria-labelledby="plan-h">
      <div className="page-head">
        <h1 id="plan-h">Plan &amp; seats</h1>
      </div>

      <h2 id="headroom-h">Plan headroom</h2>
      <p className="muted small">
        Each developer's newest reading of Anthropic's subscription limits (last 7 days), closest to the limit first. A bar turns red at
        the developer's pre-emptive failover threshold.
      </p>
      {headroom.isError ? (
        <ErrorState error={headroom.error} retry={() => headroom.refetch()} />
      ) : headroom.data && headroom.data.items.length === 0 ? (
        <Empty>No Plan rate-limit readings in the last 7 days (API-key traffic carries none).</Empty>
      ) : (
        <table className="data" aria-labelledby="headroom-h" aria-busy={headroom.isFetching} data-testid="headroom">
          <thead>
            <tr>
              <th scope="col">Developer</th>
              <th scope="col">5-hour window</th>
              <th scope="col">Resets ({tz})</th>
              <th scope="col">7-day window</th>
              <th scope="col">Status</th>
              <th scope="col">Threshold</th>
              <th scope="col">Read at</th>
            </tr>
          </thead>
          <tbody>
            {headroom.data
              ? headroom.data.items.map((h) => (
                  <tr key={h.user_id}>
                    <td>
                      <Link to={'/developers/' + h.user_id}>{h.name}</Link>
                    </td>
                    <td>
                      <Meter value={h.utilization_5h} threshold={h.preempt_threshold} />
                    </td>
                    <td>{dateTime(h.reset_5h, tz)}</td>
                    <td>
                      <Meter value={h.utilization_7d} threshold={h.preempt_threshold} />
                    </td>
                    <td>
                      <code>{h.status || '—'}</code>
                    </td>
                    <td>{h.preempt_threshold === null ? 'default' : h.preempt_threshold === 0 ? 'off' : utilization(h.preempt_threshold)}</td>
                    <td>{dateTime(h.sampled_at, tz)}</td>
                  </tr>
                ))
              : Array.from({ length: 3 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={7}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}

      <h2 id="seats-h">Seat economics</h2>
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault()
          const v = new FormData(e.currentTarget).get('month')
          const n = new URLSearchParams(sp)
          if (v) n.set('month', String(v))
          else n.delete('month')
          setSp(n)
        }}
      >
        <label>
          Month <input name="month" type="month" defaultValue={month || seats.data?.month} key={seats.data?.month} />
        </label>
        <button type="submit">Show</button>
      </form>
      <p className="muted small">
        What each developer's month is worth next to their seat: their Plan traffic at Anthropic's list prices, their Bedrock spend, and
        all of it at Bedrock's prices. The recommendation's rule is in the documentation (docs/dashboard.md, "Seat economics").
      </p>
      {seats.isError ? (
        <ErrorState error={seats.error} retry={() => seats.refetch()} />
      ) : seats.data && seats.data.items.length === 0 ? (
        <Empty>No developer used the gateway or has a seat recorded in {seats.data.month}.</Empty>
      ) : (
        <table
          className="data"
          aria-labelledby="seats-h"
          aria-busy={seats.isFetching}
          data-testid="seats"
          data-month={seats.data?.month}
        >
          <thead>
            <tr>
              <th scope="col">Developer</th>
              <th scope="col">Seat</th>
              <th scope="col" className="r">
                Seat price
              </th>
              <th scope="col" className="r">
                Plan at list prices
              </th>
              <th scope="col" className="r">
                Bedrock spend
              </th>
              <th scope="col" className="r">
                All on Bedrock
              </th>
              <th scope="col" className="r">
                Requests
              </th>
              <th scope="col">Recommendation</th>
            </tr>
          </thead>
          <tbody>
            {seats.data
              ? seats.data.items.map((s) => (
                  <tr key={s.user_id}>
                    <td>
                      <Link to={'/developers/' + s.user_id}>{s.name}</Link>
                    </td>
                    <td>{seatName(s.seat_type)}</td>
                    <td className="r">{s.seat_price_usd === null ? '—' : <Money value={s.seat_price_usd} />}</td>
                    <td className="r">
                      <Money value={s.plan_list_usd} />
                    </td>
                    <td className="r">
                      <Money value={s.bedrock_usd} />
                    </td>
                    <td className="r">
                      <Money value={s.bedrock_equivalent_usd} />
                    </td>
                    <td className="r">{integer(s.requests)}</td>
                    <td>
                      <strong>{recommendation(s)}</strong>
                      <div className="muted small">{s.reason}</div>
                    </td>
                  </tr>
                ))
              : Array.from({ length: 3 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={8}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}
    </section>
  )
}
