import { useState } from 'react'
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query'
import { all, api, ApiError, type Model, type Price } from '../api'
import { dateTime } from '../format'
import { useCanWrite, useSession } from '../session'
import { Dialog } from '../components/Dialog'
import { Empty, ErrorState, Loading } from '../components/States'

function fieldErrors(e: unknown): string {
  if (e instanceof ApiError) return e.fields.map((f) => `${f.field}: ${f.message}`).join('; ') || e.message
  return e ? String(e) : ''
}

/** Whether a price row applies to a model (its own, or its family's). */
function priced(m: Model, prices: Price[], provider: string): boolean {
  return prices.some((p) => p.provider === provider && p.effective_to === null && (p.model_id === m.anthropic_model_id || m.aliases.includes(p.model_id) || (p.model_id === '' && p.family === m.family)))
}

export default function Models() {
  const { billing_timezone: tz } = useSession()
  const canWrite = useCanWrite()
  const qc = useQueryClient()
  const models = useQuery({ queryKey: ['models'], queryFn: () => all<Model>('/models') })
  const prices = useQuery({ queryKey: ['prices'], queryFn: () => all<Price>('/prices') })
  const [editing, setEditing] = useState<Model | 'new' | null>(null)
  const [deleting, setDeleting] = useState<Model | null>(null)
  const [addingPrice, setAddingPrice] = useState(false)
  const [region, setRegion] = useState('us-east-1')
  const [providerFilter, setProviderFilter] = useState('')
  const del = useMutation({
    mutationFn: (m: Model) => api<void>('DELETE', '/models/' + m.id),
    onSuccess: () => {
      setDeleting(null)
      qc.invalidateQueries({ queryKey: ['models'] })
    },
  })
  if (models.isPending || prices.isPending) return <Loading label="Loading models and prices" />
  if (models.isError) return <ErrorState error={models.error} retry={() => models.refetch()} />
  if (prices.isError) return <ErrorState error={prices.error} retry={() => prices.refetch()} />
  const ms = models.data
  const ps = prices.data
  const regions = [...new Set(ms.flatMap((m) => Object.keys(m.regions)).filter((r) => r !== ''))].sort()
  const unmapped = ms.filter((m) => m.enabled && !(region in m.regions) && !('' in m.regions))
  const noPrice = ms.filter((m) => m.enabled && (!priced(m, ps, 'anthropic') || !priced(m, ps, 'bedrock')))
  return (
    <section aria-labelledby="models-h">
      <div className="page-head">
        <h1 id="models-h">Models &amp; prices</h1>
      </div>
      <div className="panel" aria-labelledby="gaps-h">
        <h2 id="gaps-h">Gaps</h2>
        <label>
          Region
          <select value={region} onChange={(e) => setRegion(e.target.value)}>
            {regions.map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
        <p data-testid="unmapped">
          {unmapped.length === 0 ? `Every enabled model has a Bedrock mapping for ${region}.` : `No mapping for ${region}: ${unmapped.map((m) => m.anthropic_model_id).join(', ')} (a Bedrock request for these is refused with a 400).`}
        </p>
        <p data-testid="unpriced">
          {noPrice.length === 0
            ? 'Every enabled model has a price of its own or of its family for both providers.'
            : `Priced by a default only: ${noPrice.map((m) => m.anthropic_model_id).join(', ')}.`}
        </p>
      </div>
      <div className="panel" aria-labelledby="map-h">
        <div className="panel-head">
          <h2 id="map-h">Model mappings</h2>
          {canWrite && (
            <button type="button" onClick={() => setEditing('new')}>
              New mapping
            </button>
          )}
        </div>
        <table className="data">
          <caption className="sr-only">Model mappings: which Bedrock model serves each Anthropic model id</caption>
          <thead>
            <tr>
              <th scope="col">Anthropic model</th>
              <th scope="col">Family</th>
              <th scope="col">Bedrock model</th>
              <th scope="col">Profile in {region}</th>
              <th scope="col">Enabled</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {ms.map((m) => (
              <tr key={m.id}>
                <td>
                  {m.anthropic_model_id}
                  {m.aliases.length > 0 && <div className="muted small">{m.aliases.join(', ')}</div>}
                </td>
                <td>{m.family}</td>
                <td>
                  <code>{m.bedrock_model_id}</code>
                </td>
                <td>
                  <code>{m.regions[region] ?? m.regions[''] ?? '—'}</code>
                </td>
                <td>{m.enabled ? 'yes' : 'no'}</td>
                <td className="row-actions">
                  {canWrite && (
                    <>
                      <button type="button" className="secondary" onClick={() => setEditing(m)}>
                        Edit
                      </button>
                      <button type="button" className="danger" onClick={() => setDeleting(m)}>
                        Delete
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="panel" aria-labelledby="price-h">
        <div className="panel-head">
          <h2 id="price-h">Prices (USD per million tokens)</h2>
          <label>
            Provider
            <select value={providerFilter} onChange={(e) => setProviderFilter(e.target.value)}>
              <option value="">All</option>
              <option value="anthropic">Anthropic (Plan list price)</option>
              <option value="bedrock">Bedrock</option>
            </select>
          </label>
          {canWrite && (
            <button type="button" onClick={() => setAddingPrice(true)}>
              New price
            </button>
          )}
        </div>
        {ps.length === 0 ? (
          <Empty>No prices: every request is priced at the built-in default.</Empty>
        ) : (
          <table className="data">
            <caption className="sr-only">Effective-dated prices</caption>
            <thead>
              <tr>
                <th scope="col">Provider</th>
                <th scope="col">Region</th>
                <th scope="col">Model or family</th>
                <th scope="col" className="r">Input</th>
                <th scope="col" className="r">Output</th>
                <th scope="col" className="r">Cache read</th>
                <th scope="col" className="r">Write 5 m</th>
                <th scope="col" className="r">Write 1 h</th>
                <th scope="col">Effective</th>
              </tr>
            </thead>
            <tbody>
              {ps
                .filter((p) => !providerFilter || p.provider === providerFilter)
                .map((p) => (
                  <tr key={p.id} title={p.source}>
                    <td>{p.provider}</td>
                    <td>{p.region || 'any'}</td>
                    <td>{p.model_id || (p.family ? p.family + ' (family)' : 'default')}</td>
                    <td className="r num">{p.input_usd_per_mtok}</td>
                    <td className="r num">{p.output_usd_per_mtok}</td>
                    <td className="r num">{p.cache_read_usd_per_mtok}</td>
                    <td className="r num">{p.cache_write_5m_usd_per_mtok}</td>
                    <td className="r num">{p.cache_write_1h_usd_per_mtok}</td>
                    <td>
                      {dateTime(p.effective_from, tz)} → {p.effective_to ? dateTime(p.effective_to, tz) : 'now'}
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
        )}
      </div>
      <Dialog open={editing !== null} title={editing === 'new' ? 'New model mapping' : 'Edit model mapping'} onClose={() => setEditing(null)}>
        {editing !== null && <ModelForm model={editing === 'new' ? null : editing} onDone={() => setEditing(null)} />}
      </Dialog>
      <Dialog open={deleting !== null} title="Delete this mapping?" onClose={() => setDeleting(null)}>
        {deleting && (
          <form
            onSubmit={(e) => {
              e.preventDefault()
              del.mutate(deleting)
            }}
          >
            <p>Bedrock requests for {deleting.anthropic_model_id} will be refused once it is gone.</p>
            <p className="form-error" role="alert">
              {fieldErrors(del.error)}
            </p>
            <div className="actions">
              <button type="button" className="secondary" onClick={() => setDeleting(null)}>
                Cancel
              </button>
              <button type="submit" className="danger">
                Delete
              </button>
            </div>
          </form>
        )}
      </Dialog>
      <Dialog open={addingPrice} title="New price" onClose={() => setAddingPrice(false)}>
        {addingPrice && <PriceForm onDone={() => setAddingPrice(false)} />}
      </Dialog>
    </section>
  )
}

function ModelForm({ model, onDone }: { model: Model | null; onDone: () => void }) {
  const qc = useQueryClient()
  const [f, setF] = useState({
    anthropic_model_id: model?.anthropic_model_id ?? '',
    family: model?.family ?? '',
    bedrock_model_id: model?.bedrock_model_id ?? '',
    aliases: model?.aliases.join(', ') ?? '',
    regions: Object.entries(model?.regions ?? {})
      .map(([r, p]) => `${r || '*'}=${p}`)
      .join('\n'),
    enabled: model?.enabled ?? true,
  })
  const save = useMutation({
    mutationFn: () => {
      const body = {
        anthropic_model_id: f.anthropic_model_id,
        family: f.family,
        bedrock_model_id: f.bedrock_model_id,
        aliases: f.aliases.split(',').map((s) => s.trim()).filter(Boolean),
        regions: Object.fromEntries(
          f.regions
            .split('\n')
            .map((l) => l.trim())
            .filter(Boolean)
            .map((l) => {
              const [r, p] = l.split('=')
              return [r?.trim() === '*' ? '' : (r ?? '').trim(), (p ?? '').trim()]
            }),
        ),
        enabled: f.enabled,
      }
      return model ? api<Model>('PATCH', '/models/' + model.id, body) : api<Model>('POST', '/models', body)
    },
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['models'] })
      onDone()
    },
  })
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <label>
        Anthropic model id <input required value={f.anthropic_model_id} onChange={(e) => setF({ ...f, anthropic_model_id: e.target.value })} />
      </label>
      <label>
        Family <input required value={f.family} onChange={(e) => setF({ ...f, family: e.target.value })} />
      </label>
      <label>
        Bedrock model id <input required value={f.bedrock_model_id} onChange={(e) => setF({ ...f, bedrock_model_id: e.target.value })} />
      </label>
      <label>
        Aliases (comma-separated) <input value={f.aliases} onChange={(e) => setF({ ...f, aliases: e.target.value })} />
      </label>
      <label>
        Inference profile per region (one <code>region=profile</code> a line; <code>*</code> for any other region)
        <textarea rows={5} value={f.regions} onChange={(e) => setF({ ...f, regions: e.target.value })} />
      </label>
      <label className="inline">
        <input type="checkbox" checked={f.enabled} onChange={(e) => setF({ ...f, enabled: e.target.checked })} /> Enabled
      </label>
      <p className="form-error" role="alert">
        {fieldErrors(save.error)}
      </p>
      <div className="actions">
        <button type="button" className="secondary" onClick={onDone}>
          Cancel
        </button>
        <button type="submit" disabled={save.isPending}>
          Save
        </button>
      </div>
    </form>
  )
}

function PriceForm({ onDone }: { onDone: () => void }) {
  const qc = useQueryClient()
  const [f, setF] = useState({
    provider: 'bedrock',
    region: '',
    model_id: '',
    input_usd_per_mtok: '',
    output_usd_per_mtok: '',
    cache_read_usd_per_mtok: '',
    cache_write_5m_usd_per_mtok: '',
    cache_write_1h_usd_per_mtok: '',
    effective_from: new Date().toISOString().slice(0, 16),
    source: '',
    supersede: true,
  })
  const save = useMutation({
    mutationFn: () => api<Price>('POST', '/prices', { ...f, effective_from: new Date(f.effective_from).toISOString() }),
    onSuccess: () => {
      qc.invalidateQueries({ queryKey: ['prices'] })
      onDone()
    },
  })
  const rate = (k: keyof typeof f, label: string) => (
    <label>
      {label} <input required inputMode="decimal" value={String(f[k])} onChange={(e) => setF({ ...f, [k]: e.target.value })} />
    </label>
  )
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault()
        save.mutate()
      }}
    >
      <label>
        Provider
        <select value={f.provider} onChange={(e) => setF({ ...f, provider: e.target.value })}>
          <option value="bedrock">Bedrock</option>
          <option value="anthropic">Anthropic</option>
        </select>
      </label>
      <label>
        Region (empty for any) <input value={f.region} onChange={(e) => setF({ ...f, region: e.target.value })} />
      </label>
      <label>
        Model id <input required value={f.model_id} onChange={(e) => setF({ ...f, model_id: e.target.value })} />
      </label>
      {rate('input_usd_per_mtok', 'Input')}
      {rate('output_usd_per_mtok', 'Output')}
      {rate('cache_read_usd_per_mtok', 'Cache read')}
      {rate('cache_write_5m_usd_per_mtok', 'Cache write 5 m')}
      {rate('cache_write_1h_usd_per_mtok', 'Cache write 1 h')}
      <label>
        Effective from (your local time) <input type="datetime-local" required value={f.effective_from} onChange={(e) => setF({ ...f, effective_from: e.target.value })} />
      </label>
      <label>
        Source <input value={f.source} onChange={(e) => setF({ ...f, source: e.target.value })} />
      </label>
      <label className="inline">
        <input type="checkbox" checked={f.supersede} onChange={(e) => setF({ ...f, supersede: e.target.checked })} /> End the current price of the same model and region then
      </label>
      <p className="form-error" role="alert">
        {fieldErrors(save.error)}
      </p>
      <div className="actions">
        <button type="button" className="secondary" onClick={onDone}>
          Cancel
        </button>
        <button type="submit" disabled={save.isPending}>
          Save
        </button>
      </div>
    </form>
  )
}
