import { useState } from 'react'
import { useSearchParams } from 'react-router'
import { useQuery } from '@tanstack/react-query'
import { get, qs, type AuditEntry, type Page } from '../api'
import { dateTime } from '../format'
import { useSession } from '../session'
import { Empty, ErrorState, Skeleton } from '../components/States'

const fields = [
  ['actor', 'Actor'],
  ['action', 'Action'],
  ['target_type', 'Target type'],
  ['target_id', 'Target id'],
] as const

export default function Audit() {
  const { billing_timezone: tz } = useSession()
  const [sp, setSp] = useSearchParams()
  const [draft, setDraft] = useState(() => Object.fromEntries(['actor', 'action', 'target_type', 'target_id', 'from', 'to'].map((k) => [k, sp.get(k) ?? ''])))
  // Cursors of the pages before this one, for "Previous".
  const [back, setBack] = useState<string[]>([])
  const params = { actor: sp.get('actor'), action: sp.get('action'), target_type: sp.get('target_type'), target_id: sp.get('target_id'), from: sp.get('from') ? new Date(sp.get('from')!).toISOString() : null, to: sp.get('to') ? new Date(sp.get('to')!).toISOString() : null, cursor: sp.get('cursor'), limit: 50 }
  const list = useQuery({ queryKey: ['audit', params], queryFn: () => get<Page<AuditEntry>>('/audit' + qs(params)) })
  const go = (cursor: string | null) => {
    const n = new URLSearchParams(sp)
    if (cursor) n.set('cursor', cursor)
    else n.delete('cursor')
    setSp(n)
  }
  return (
    <section aria-labelledby="audit-h">
      <div className="page-head">
        <h1 id="audit-h">Audit log</h1>
      </div>
      <form
        className="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault()
          const n = new URLSearchParams()
          for (const [k, v] of Object.entries(draft)) if (v) n.set(k, v)
          setBack([])
          setSp(n)
        }}
      >
        {fields.map(([k, label]) => (
          <label key={k}>
            {label} <input value={draft[k]} onChange={(e) => setDraft({ ...draft, [k]: e.target.value })} />
          </label>
        ))}
        <label>
          From <input type="datetime-local" value={draft.from} onChange={(e) => setDraft({ ...draft, from: e.target.value })} />
        </label>
        <label>
          To <input type="datetime-local" value={draft.to} onChange={(e) => setDraft({ ...draft, to: e.target.value })} />
        </label>
        <button type="submit">Filter</button>
      </form>
      {list.isError ? (
        <ErrorState error={list.error} retry={() => list.refetch()} />
      ) : list.data && list.data.items.length === 0 ? (
        <Empty>No entries match.</Empty>
      ) : (
        <table className="data" aria-busy={list.isFetching}>
          <caption className="sr-only">Audit entries, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time ({tz})</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Change</th>
            </tr>
          </thead>
          <tbody>
            {list.data
              ? list.data.items.map((e) => (
                  <tr key={e.id}>
                    <td>{dateTime(e.at, tz)}</td>
                    <td>
                      {e.actor}
                      {e.actor_role && <span className="muted small"> ({e.actor_role})</span>}
                      {e.ip && <div className="muted small">{e.ip}</div>}
                    </td>
                    <td>
                      <code>{e.action}</code>
                    </td>
                    <td>
                      {e.target_type} <span className="muted small">{e.target_id}</span>
                    </td>
                    <td>
                      {(e.before !== null || e.after !== null) && (
                        <details>
                          <summary>Before / after</summary>
                          <pre className="json">{JSON.stringify({ before: e.before, after: e.after }, null, 2)}</pre>
                        </details>
                      )}
                    </td>
                  </tr>
                ))
              : Array.from({ length: 10 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={5}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        {sp.get('cursor') && (
          <button
            type="button"
            className="secondary"
            onClick={() => {
              const prev = back.slice(0, -1)
              go(back[back.length - 1] || null)
              setBack(prev)
            }}
          >
            Previous page
          </button>
        )}
        {list.data?.next_cursor && (
          <button
            type="button"
            className="secondary"
            onClick={() => {
              setBack([...back, sp.get('cursor') ?? ''])
              go(list.data.next_cursor)
            }}
          >
            Next page
          </button>
        )}
      </div>
    </section>
  )
}
