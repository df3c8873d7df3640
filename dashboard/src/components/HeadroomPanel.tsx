import { useState } from 'react'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { api, ApiError, get, type SeatType, type User, type UserHeadroom } from '../api'
import { dateTime } from '../format'
import { useSession } from '../session'
import { seatName, utilization } from '../pages/Plan'
import { Empty, ErrorState } from './States'

/**
 * A developer's Plan headroom (the newest reading of Anthropic's
 * subscription limits, the forecast per window, the last 24 hours of
 * readings) and the two settings that act on it: the pre-emptive failover
 * threshold and the seat type.
 */
export function HeadroomPanel({ user }: { user: User }) {
  const { billing_timezone: tz } = useSession()
  const qc = useQueryClient()
  const h = useQuery({ queryKey: ['user-headroom', user.id], queryFn: () => get<UserHeadroom>('/users/' + user.id + '/headroom') })
  const [threshold, setThreshold] = useState(user.preempt_threshold === null ? '' : String(Math.round(user.preempt_threshold * 100)))
  const [seat, setSeat] = useState<string>(user.seat_type ?? '')
  const save = useMutation({
    mutationFn: () =>
      api<User>('PATCH', '/users/' + user.id, {
        preempt_threshold: threshold === '' ? null : Number(threshold) / 100,
        seat_type: seat === '' ? null : (seat as SeatType),
      }),
    onSuccess: (u) => {
      qc.setQueryData(['user', user.id], u)
      qc.invalidateQueries({ queryKey: ['user-headroom', user.id] })
      qc.invalidateQueries({ queryKey: ['seats'] })
    },
  })
  return (
    <div className="panel" aria-labelledby="headroom-h">
      <h2 id="headroom-h">Plan headroom</h2>
      {h.isError ? (
        <ErrorState error={h.error} retry={() => h.refetch()} />
      ) : h.data && !h.data.current ? (
        <Empty>No Plan rate-limit reading yet: Anthropic announces the subscription's limits on Plan answers to subscription credentials.</Empty>
      ) : h.data?.current ? (
        <>
          <table className="data" data-testid="forecast">
            <caption className="sr-only">Plan windows of {user.name}</caption>
            <thead>
              <tr>
                <th scope="col">Window</th>
                <th scope="col" className="r">
                  Used
                </th>
                <th scope="col">Resets ({tz})</th>
                <th scope="col" className="r">
                  Burn per hour
                </th>
                <th scope="col">Limit reached ({tz})</th>
              </tr>
            </thead>
            <tbody>
              {h.data.forecasts.map((f) => (
                <tr key={f.window}>
                  <td>{f.window === '5h' ? '5 hours' : '7 days'}</td>
                  <td className="r num">{utilization(f.utilization)}</td>
                  <td>{dateTime(f.reset_at, tz)}</td>
                  <td className="r num">{f.burn_per_hour === null ? '—' : utilization(f.burn_per_hour)}</td>
                  <td>{f.limit_at ? dateTime(f.limit_at, tz) : 'not before the reset'}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="muted small">
            Status <code>{h.data.current.status || '—'}</code>, binding window <code>{h.data.current.claim || '—'}</code>, read{' '}
            {dateTime(h.data.current.sampled_at, tz)}. Forecast: the last hour's rate, extrapolated linearly.
          </p>
          <details>
            <summary>Readings, last 24 hours ({h.data.history.length})</summary>
            <table className="data">
              <caption className="sr-only">Plan readings of {user.name}, oldest first</caption>
              <thead>
                <tr>
                  <th scope="col">Read at ({tz})</th>
                  <th scope="col" className="r">
                    5 hours
                  </th>
                  <th scope="col" className="r">
                    7 days
                  </th>
                  <th scope="col">Status</th>
                </tr>
              </thead>
              <tbody>
                {h.data.history.map((s) => (
                  <tr key={s.sampled_at}>
                    <td>{dateTime(s.sampled_at, tz)}</td>
                    <td className="r num">{utilization(s.utilization_5h)}</td>
                    <td className="r num">{utilization(s.utilization_7d)}</td>
                    <td>{s.status}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </details>
        </>
      ) : null}
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault()
          save.mutate()
        }}
      >
        <label>
          Pre-emptive failover at (% used){' '}
          <input type="number" min={0} max={100} step={1} placeholder="default" value={threshold} onChange={(e) => setThreshold(e.target.value)} />
        </label>
        <label>
          Seat{' '}
          <select value={seat} onChange={(e) => setSeat(e.target.value)}>
            <option value="">not recorded</option>
            {(['pro', 'max_5x', 'max_20x', 'api'] as const).map((s) => (
              <option key={s} value={s}>
                {seatName(s)}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={save.isPending}>
          Save
        </button>
        {save.isError && (
          <span role="alert" className="error">
            {save.error instanceof ApiError ? save.error.message : 'Saving failed'}
          </span>
        )}
        {save.isSuccess && <span role="status">Saved.</span>}
      </form>
      <p className="muted small">Empty: the gateway default. 0: off for this developer. At or above it, plan_first requests go to Bedrock until the window resets.</p>
    </div>
  )
}
