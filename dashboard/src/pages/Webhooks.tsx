import { useId, useState } from 'react'
import { useSearchParams } from 'react-router'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { all, api, ApiError, get, qs, type CreatedWebhook, type Delivery, type DeliveryStatus, type Page, type Webhook, type WebhookFormat } from '../api'
import { dateTime } from '../format'
import { useCanWrite, useSession } from '../session'
import { deliveryStatus, eventTypes, eventTypesLabel, urlHost } from '../webhooks'
import { Dialog } from '../components/Dialog'
import { Empty, ErrorState, Skeleton } from '../components/States'

function fieldErrors(e: unknown): string {
  if (e instanceof ApiError) return e.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || e.message
  return e ? String(e) : ''
}

// While a delivery is pending the log is read again every 2 s, so that a
// test event is seen arriving without a reload; a settled log is not polled.
const pendingPoll = 2000
const hasPending = (p: Page<Delivery> | undefined) => (p?.items.some((d) => d.status === 'pending') ? pendingPoll : false)

/**
 * Webhooks, for owners and admins (the API refuses viewers even reads: a
 * URL can be a credential): the list with each one's last delivery,
 * create (the signing secret is shown once), edit, enable or disable,
 * delete, send a test event, and the delivery log of the one chosen
 * (?webhook=id, paged like the audit log).
 */
export default function Webhooks() {
  const { billing_timezone: tz } = useSession()
  const canWrite = useCanWrite()
  const qc = useQueryClient()
  const [sp, setSp] = useSearchParams()
  const selectedID = sp.get('webhook')
  const [editing, setEditing] = useState<Webhook | 'new' | null>(null)
  const [created, setCreated] = useState<CreatedWebhook | null>(null)
  const [deleting, setDeleting] = useState<Webhook | null>(null)
  const [notice, setNotice] = useState('')
  const list = useQuery({ queryKey: ['webhooks'], queryFn: () => all<Webhook>('/webhooks') })
  const select = (id: string | null) => {
    const n = new URLSearchParams()
    if (id) n.set('webhook', id)
    setSp(n)
  }
  const toggle = useMutation({
    mutationFn: (w: Webhook) => api<Webhook>('PATCH', '/webhooks/' + w.id, { enabled: !w.enabled }),
    onSuccess: (w) => qc.setQueryData<Webhook[]>(['webhooks'], (l) => l?.map((x) => (x.id === w.id ? w : x))),
    onSettled: () => qc.invalidateQueries({ queryKey: ['webhooks'] }),
  })
  const test = useMutation({
    mutationFn: (w: Webhook) => api<{ event_id: string }>('POST', '/webhooks/' + w.id + '/test'),
    onSuccess: (r, w) => {
      setNotice(`Test event ${r.event_id} queued for ${w.name}.`)
      qc.invalidateQueries({ queryKey: ['deliveries', w.id] })
      if (selectedID !== w.id) select(w.id)
    },
  })
  const del = useMutation({
    mutationFn: (w: Webhook) => api<void>('DELETE', '/webhooks/' + w.id),
    onSuccess: (_, w) => {
      setDeleting(null)
      setNotice(`Webhook ${w.name} deleted.`)
      if (selectedID === w.id) select(null)
      qc.invalidateQueries({ queryKey: ['webhooks'] })
    },
  })
  const selected = list.data?.find((w) => w.id === selectedID)
  const err = fieldErrors(toggle.error) || fieldErrors(test.error)
  return (
    <section aria-labelledby="webhooks-h">
      <div className="page-head">
        <h1 id="webhooks-h">Webhooks</h1>
        {canWrite && (
          <button type="button" onClick={() => setEditing('new')}>
            New webhook
          </button>
        )}
      </div>
      <p className="form-error" role="alert">
        {err}
      </p>
      <p className="muted" role="status">
        {notice}
      </p>
      {list.isError ? (
        <ErrorState error={list.error} retry={() => list.refetch()} />
      ) : list.data && list.data.length === 0 ? (
        <Empty>No webhooks yet. Add one to tell another system when keys are issued or revoked, a Bedrock credential is refused, a breaker stays open or a budget crosses a threshold.</Empty>
      ) : (
        <table className="data" aria-busy={list.isFetching} data-testid="webhooks">
          <caption className="sr-only">Webhooks</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Host</th>
              <th scope="col">Format</th>
              <th scope="col">Events</th>
              <th scope="col">Status</th>
              <th scope="col">Last delivery</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data
              ? list.data.map((w) => (
                  <tr key={w.id} data-testid={'webhook-' + w.name} aria-current={w.id === selectedID ? 'true' : undefined}>
                    <td>{w.name}</td>
                    <td>
                      <code>{urlHost(w.url)}</code>
                    </td>
                    <td>{w.format}</td>
                    <td>{eventTypesLabel(w)}</td>
                    <td>{w.enabled ? 'Enabled' : <span className="badge">Disabled</span>}</td>
                    <td data-testid="last-delivery">
                      <LastDelivery webhook={w} tz={tz} />
                    </td>
                    <td className="row-actions">
                      <button type="button" className="secondary" aria-pressed={w.id === selectedID} onClick={() => select(w.id === selectedID ? null : w.id)}>
                        Deliveries<span className="sr-only"> of {w.name}</span>
                      </button>
                      {canWrite && (
                        <>
                          <button type="button" className="secondary" disabled={test.isPending} onClick={() => test.mutate(w)}>
                            Send test<span className="sr-only"> event to {w.name}</span>
                          </button>
                          <button type="button" className="secondary" onClick={() => setEditing(w)}>
                            Edit<span className="sr-only"> {w.name}</span>
                          </button>
                          <button type="button" className="secondary" disabled={toggle.isPending} onClick={() => toggle.mutate(w)}>
                            {w.enabled ? 'Disable' : 'Enable'}
                            <span className="sr-only"> {w.name}</span>
                          </button>
                          <button type="button" className="danger" onClick={() => setDeleting(w)}>
                            Delete<span className="sr-only"> {w.name}</span>
                          </button>
                        </>
                      )}
                    </td>
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
      <p className="muted small">
        Only the host of a URL is listed: a webhook URL can itself be a credential. Deliveries are signed with the webhook&apos;s secret and retried with
        backoff; see docs/webhooks.md for the payload and how to verify it.
      </p>
      {selected && <DeliveryLog key={selected.id} webhook={selected} tz={tz} />}
      <Dialog open={editing !== null} title={editing === 'new' ? 'New webhook' : 'Edit webhook'} onClose={() => setEditing(null)}>
        {editing !== null && (
          <WebhookForm
            webhook={editing === 'new' ? null : editing}
            onDone={(w) => {
              setEditing(null)
              if (w && 'secret' in w) setCreated(w)
            }}
          />
        )}
      </Dialog>
      <Dialog open={created !== null} title="Webhook created" onClose={() => setCreated(null)}>
        {created && <ShownSecret webhook={created} onClose={() => setCreated(null)} />}
      </Dialog>
      <Dialog open={deleting !== null} title="Delete this webhook?" onClose={() => setDeleting(null)}>
        {deleting && (
          <form
            onSubmit={(e) => {
              e.preventDefault()
              del.mutate(deleting)
            }}
          >
            <p>
              <strong>{deleting.name}</strong> ({urlHost(deleting.url)}) gets no more events, and its delivery log is deleted with it. To pause it instead,
              disable it.
            </p>
            <p className="form-error" role="alert">
              {fieldErrors(del.error)}
            </p>
            <div className="actions">
              <button type="button" className="secondary" onClick={() => setDeleting(null)}>
                Cancel
              </button>
              <button type="submit" className="danger" disabled={del.isPending}>
                Delete webhook
              </button>
            </div>
          </form>
        )}
      </Dialog>
    </section>
  )
}

/** The newest delivery of a webhook, one small read per row. */
function LastDelivery({ webhook, tz }: { webhook: Webhook; tz: string }) {
  const last = useQuery({
    queryKey: ['deliveries', webhook.id, 'last'],
    queryFn: () => get<Page<Delivery>>('/webhooks/' + webhook.id + '/deliveries?limit=1'),
    refetchInterval: (q) => hasPending(q.state.data),
  })
  if (last.isError) return <span className="muted">could not load</span>
  if (!last.data) return <Skeleton width="6rem" />
  const d = last.data.items[0]
  if (!d) return <span className="muted">none yet</span>
  return (
    <span title={d.last_error || undefined}>
      {deliveryStatus(d, tz)}
      <span className="muted small"> · {d.event_type}</span>
    </span>
  )
}

const statuses: { id: DeliveryStatus | ''; label: string }[] = [
  { id: '', label: 'All' },
  { id: 'pending', label: 'Pending' },
  { id: 'delivered', label: 'Delivered' },
  { id: 'failed', label: 'Failed' },
]

/** A webhook's deliveries, newest first, 25 a page; ?status= and ?cursor= in the URL. */
function DeliveryLog({ webhook, tz }: { webhook: Webhook; tz: string }) {
  const [sp, setSp] = useSearchParams()
  // Cursors of the pages before this one, for "Previous".
  const [back, setBack] = useState<string[]>([])
  const status = sp.get('status') ?? ''
  const cursor = sp.get('cursor')
  const log = useQuery({
    queryKey: ['deliveries', webhook.id, status, cursor],
    queryFn: () => get<Page<Delivery>>('/webhooks/' + webhook.id + '/deliveries' + qs({ status, cursor, limit: 25 })),
    refetchInterval: (q) => hasPending(q.state.data),
  })
  const set = (k: string, v: string | null) => {
    const n = new URLSearchParams(sp)
    if (v) n.set(k, v)
    else n.delete(k)
    if (k !== 'cursor') n.delete('cursor')
    setSp(n)
  }
  return (
    <div className="panel" aria-labelledby="deliveries-h">
      <div className="panel-head">
        <h2 id="deliveries-h">Deliveries of {webhook.name}</h2>
        <div className="range" role="group" aria-label="Delivery status">
          {statuses.map((s) => (
            <button
              key={s.id}
              type="button"
              className={s.id === status ? 'chip on' : 'chip'}
              aria-pressed={s.id === status}
              onClick={() => {
                setBack([])
                set('status', s.id)
              }}
            >
              {s.label}
            </button>
          ))}
        </div>
      </div>
      {log.isError ? (
        <ErrorState error={log.error} retry={() => log.refetch()} />
      ) : log.data && log.data.items.length === 0 ? (
        <Empty>No deliveries{status ? ' with this status' : ''}. &ldquo;Send test&rdquo; sends one.</Empty>
      ) : (
        <table className="data" aria-busy={log.isFetching} data-testid="deliveries">
          <caption className="sr-only">Deliveries of {webhook.name}, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Queued ({tz})</th>
              <th scope="col">Event</th>
              <th scope="col">Type</th>
              <th scope="col" className="r">
                Attempts
              </th>
              <th scope="col">Status</th>
              <th scope="col">Next retry</th>
              <th scope="col">Last error</th>
            </tr>
          </thead>
          <tbody>
            {log.data
              ? log.data.items.map((d) => (
                  <tr key={d.id} data-event={d.event_id} data-status={d.status}>
                    <td>{dateTime(d.created_at, tz)}</td>
                    <td>
                      <code className="small">{d.event_id}</code>
                    </td>
                    <td>
                      <code>{d.event_type}</code>
                    </td>
                    <td className="r">{d.attempts}</td>
                    <td>{deliveryStatus(d, tz)}</td>
                    <td>{d.status === 'pending' && d.next_attempt_at ? dateTime(d.next_attempt_at, tz) : <span className="muted">—</span>}</td>
                    <td>{d.last_error || <span className="muted">—</span>}</td>
                  </tr>
                ))
              : Array.from({ length: 5 }, (_, i) => (
                  <tr key={i}>
                    <td colSpan={7}>
                      <Skeleton />
                    </td>
                  </tr>
                ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        {cursor && (
          <button
            type="button"
            className="secondary"
            onClick={() => {
              set('cursor', back[back.length - 1] || null)
              setBack(back.slice(0, -1))
            }}
          >
            Previous page
          </button>
        )}
        {log.data?.next_cursor && (
          <button
            type="button"
            className="secondary"
            onClick={() => {
              setBack([...back, cursor ?? ''])
              set('cursor', log.data.next_cursor)
            }}
          >
            Next page
          </button>
        )}
      </div>
    </div>
  )
}

/** Create (webhook null) or edit a webhook. onDone gets the created one, with its secret. */
function WebhookForm({ webhook, onDone }: { webhook: Webhook | null; onDone: (w: Webhook | CreatedWebhook | null) => void }) {
  const qc = useQueryClient()
  const id = useId()
  const [form, setForm] = useState({
    name: webhook?.name ?? '',
    url: webhook?.url ?? '',
    format: webhook?.format ?? ('generic' as WebhookFormat),
    event_types: webhook?.event_types ?? [],
    enabled: webhook?.enabled ?? true,
    secret: '',
  })
  const save = useMutation({
    // Dropped from the mutation cache as soon as the form closes (not after
    // the default 5 minutes): a creation's result holds the secret.
    gcTime: 0,
    mutationFn: () => {
      const { secret, ...rest } = form
      // An empty secret: generated by the service (new) or kept (edit).
      const body = secret ? { ...rest, secret } : rest
      return webhook ? api<Webhook>('PATCH', '/webhooks/' + webhook.id, body) : api<CreatedWebhook>('POST', '/webhooks', body)
    },
    onSuccess: (w) => {
      // Invalidated, never written into the cache: the created answer
      // carries the secret, which must not outlive its dialog.
      qc.invalidateQueries({ queryKey: ['webhooks'] })
      onDone(w)
    },
  })
  const toggleType = (t: string, on: boolean) =>
    setForm({ ...form, event_types: on ? eventTypes.filter((x) => x === t || form.event_types.includes(x)) : form.event_types.filter((x) => x !== t) })
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <label>
        Name <input required maxLength={200} autoComplete="off" value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} />
      </label>
      <label>
        URL (http or https)
        <input required type="url" maxLength={2048} autoComplete="off" value={form.url} onChange={(e) => setForm({ ...form, url: e.target.value })} />
      </label>
      <label>
        Format
        <select value={form.format} onChange={(e) => setForm({ ...form, format: e.target.value as WebhookFormat })}>
          <option value="generic">Generic JSON (signed)</option>
          <option value="slack">Slack message ({'{"text": …}'})</option>
        </select>
      </label>
      <fieldset>
        <legend>Event types (none checked: all)</legend>
        {eventTypes.map((t) => (
          <label key={t} className="inline">
            <input type="checkbox" name={id + '-types'} checked={form.event_types.includes(t)} onChange={(e) => toggleType(t, e.target.checked)} /> <code>{t}</code>
          </label>
        ))}
      </fieldset>
      <label className="inline">
        <input type="checkbox" checked={form.enabled} onChange={(e) => setForm({ ...form, enabled: e.target.checked })} /> Enabled (a disabled webhook keeps its
        events until it is enabled again)
      </label>
      <label>
        {webhook ? 'New signing secret (blank: keep the current one)' : 'Signing secret (blank: generated)'}
        <input type="password" autoComplete="new-password" minLength={16} maxLength={256} value={form.secret} onChange={(e) => setForm({ ...form, secret: e.target.value })} />
      </label>
      <p className="form-error" role="alert">
        {fieldErrors(save.error)}
      </p>
      <div className="actions">
        <button type="button" className="secondary" onClick={() => onDone(null)}>
          Cancel
        </button>
        <button type="submit" disabled={save.isPending}>
          {webhook ? 'Save' : 'Create'}
        </button>
      </div>
    </form>
  )
}

/** The signing secret of a new webhook, once: like a new access key, it is never shown again. */
function ShownSecret({ webhook, onClose }: { webhook: CreatedWebhook; onClose: () => void }) {
  const [copied, setCopied] = useState(false)
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(webhook.secret)
      setCopied(true)
    } catch {
      setCopied(false)
    }
  }
  return (
    <div>
      <p>
        <strong>Shown once.</strong> Copy the signing secret of {webhook.name} now: ccproxy keeps it sealed and never shows it again (a new one can be set with
        Edit). Receivers check <code>X-Ccproxy-Signature</code> with it.
      </p>
      <label>
        Signing secret
        <input readOnly value={webhook.secret} data-testid="webhook-secret" onFocus={(e) => e.target.select()} />
      </label>
      <button type="button" className="secondary" onClick={copy}>
        Copy secret
      </button>
      <p role="status" className="muted">
        {copied && 'Copied the secret.'}
      </p>
      <div className="actions">
        <button type="button" onClick={onClose}>
          Done
        </button>
      </div>
    </div>
  )
}
