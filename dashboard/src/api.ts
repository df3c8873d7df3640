// The admin API client. The session lives in the HttpOnly cookie the login
// sets; writes echo the readable CSRF cookie in X-CSRF-Token (the API's
// double-submit check). Nothing is kept in localStorage.

export class ApiError extends Error {
  status: number
  fields: { field: string; message: string }[]
  constructor(status: number, title: string, detail: string, fields: { field: string; message: string }[] = []) {
    super(detail ? `${title}: ${detail}` : title)
    this.status = status
    this.fields = fields
  }
}

/** Called when the API answers 401: the session is gone. */
let onUnauthorized: () => void = () => {}
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f
}

function csrfToken(): string {
  const m = document.cookie.match(/(?:^|;\s*)ccproxy_csrf=([^;]+)/)
  return m?.[1] ? decodeURIComponent(m[1]) : ''
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (method !== 'GET') headers['X-CSRF-Token'] = csrfToken()
  const resp = await fetch('/api/v1' + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (resp.status === 204) return undefined as T
  const text = await resp.text()
  const data: unknown = text ? JSON.parse(text) : undefined
  if (!resp.ok) {
    const p = (data ?? {}) as { title?: string; detail?: string; errors?: { field: string; message: string }[] }
    if (resp.status === 401 && path !== '/auth/login') onUnauthorized()
    throw new ApiError(resp.status, p.title ?? resp.statusText, p.detail ?? '', p.errors ?? [])
  }
  return data as T
}

export const get = <T>(path: string) => api<T>('GET', path)

export function qs(params: Record<string, string | number | undefined | null>): string {
  const u = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v))
  const s = u.toString()
  return s ? '?' + s : ''
}

// API shapes (admin/openapi.json).

export type Role = 'owner' | 'admin' | 'viewer' | 'team_admin'

export interface Session {
  username: string
  role: Role
  expires_at: string
  billing_timezone: string
  gateway_url: string
}

export interface Totals {
  requests: number
  bedrock_requests: number
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
  plan_cost_usd: string
  bedrock_cost_usd: string
  fallbacks: number
  errors: number
  aborted: number
}

export interface UsageGroup extends Totals {
  key: string
  first_at?: string
  last_at?: string
}

export interface Usage {
  from: string
  to: string
  group_by: string
  groups: UsageGroup[]
}

export type Strategy = 'plan_first' | 'bedrock_only' | 'plan_only'

export interface User {
  id: string
  name: string
  email: string | null
  routing_strategy: Strategy
  monthly_budget_usd: string | null
  /** Pre-emptive failover threshold (a fraction; 0 = off); null = the gateway default. */
  preempt_threshold: number | null
  seat_type: SeatType | null
  /** The developer's team; null when in none. */
  team_id: string | null
  status: 'active' | 'disabled'
  created_at: string
  updated_at: string
}

/** A team (docs/teams.md). */
export interface Team {
  id: string
  name: string
  monthly_budget_usd: string | null
  plan_budget_usd: string | null
  plan_budget_enforced: boolean
  /** The strategy a developer takes on joining; null: members keep their own. */
  routing_strategy: Strategy | null
  /** null allows every model. */
  allowed_models: string[] | null
  preempt_threshold: number | null
  members: number
  created_at: string
  updated_at: string
}

export interface Developer extends User {
  keys: number
  active_keys: number
  last_used_at: string | null
  requests: number
  plan_cost_usd: string
  bedrock_cost_usd: string
}

export interface Page<T> {
  items: T[]
  next_cursor: string | null
}

export interface DeveloperPage extends Page<Developer> {
  total: number
  month: string
  from: string
  to: string
}

/** Per-minute rate limits of a user or key (null: no limit). */
export interface RateLimits {
  requests_per_minute: number | null
  input_tokens_per_minute: number | null
  output_tokens_per_minute: number | null
}

export interface Key {
  id: string
  user_id: string
  name: string
  prefix: string
  status: 'active' | 'rotating' | 'revoked'
  routing_strategy: Strategy | null
  grace_until: string | null
  rotated_to: string | null
  last_used_at: string | null
  created_at: string
  revoked_at: string | null
}

export interface IssuedKey extends Key {
  key: string
  previous?: Key
}

export interface Budget {
  monthly_budget_usd: string | null
  spent_usd: string
  remaining_usd: string | null
  percent: number | null
  month: string
  month_start: string
  resets_at: string
  timezone: string
}

export interface SessionSummary extends Totals {
  session_id: string
  first_at: string
  last_at: string
  models: string[]
  agents: number
  cost_usd: string
}

export interface CacheTotals {
  requests: number
  input_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
  hit_rate: string | null
  saved_usd: string
  unread_5m_tokens: number
  unread_5m_usd: string
  unread_1h_tokens: number
  unread_1h_usd: string
  pending_5m_tokens: number
  pending_1h_tokens: number
  breaks: number
  break_wasted_usd: string
}

export interface CacheBreak {
  request_id: string
  user_id: string
  session_id: string
  agent_id: string
  model: string
  time: string
  turn: number
  previous_request_id: string
  gap_ms: number
  expected_tokens: number
  cache_read_tokens: number
  lost_tokens: number
  wasted_usd: string
}

export interface AgentNode {
  agent_id: string
  parent_agent_id: string
  parent_source: 'root' | 'header' | 'spawn' | 'assumed' | 'unseen'
  spawned_by_request_id?: string
  requests: number
  models: string[]
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
  cost_usd: string
  subtree_cost_usd: string
  fallbacks: number
  errors: number
  subagent_calls: number
  first_at: string | null
  last_at: string | null
  duration_ms: number
  children: AgentNode[]
}

export interface SessionTree {
  session_id: string
  user_id: string
  tree_source: 'none' | 'header' | 'inferred'
  requests: number
  cost_usd: string
  first_at: string
  last_at: string
  duration_ms: number
  root: AgentNode
  cache: CacheTotals
  cache_breaks: CacheBreak[]
}

export interface CacheGroup extends CacheTotals {
  key: string
  name?: string
}

export interface CacheEconomics {
  from: string
  to: string
  group_by: 'user' | 'session' | 'model' | 'day'
  total: CacheTotals
  groups: CacheGroup[]
}

export interface CacheBreakList {
  from: string
  to: string
  breaks: CacheBreak[]
}

export interface UsageRequest {
  request_id: string
  event_time: string
  user_id: string
  access_key_id: string
  session_id: string
  requested_model: string
  provider: 'anthropic' | 'bedrock'
  region: string
  fallback: boolean
  fallback_reason: string
  status: number
  input_tokens: number
  output_tokens: number
  cache_read_tokens: number
  cache_write_5m_tokens: number
  cache_write_1h_tokens: number
  cost_usd: string
  ttft_ms: number | null
  latency_ms: number
}

export interface TopUser extends Totals {
  user_id: string
  name: string
  email: string | null
}

export interface TopUsers {
  active_users: number
  items: TopUser[]
}

export interface Components {
  input_usd: string
  output_usd: string
  cache_read_usd: string
  cache_write_5m_usd: string
  cache_write_1h_usd: string
  total_usd: string
  cache_savings_usd: string
}

export interface CostSplit {
  total: Components
  models: (Components & Totals & { model: string; provider: string })[]
}

export interface Model {
  id: string
  anthropic_model_id: string
  aliases: string[]
  family: string
  bedrock_model_id: string
  regions: Record<string, string>
  enabled: boolean
}

export interface Price {
  id: string
  provider: 'anthropic' | 'bedrock'
  region: string
  model_id: string
  family: string
  input_usd_per_mtok: string
  output_usd_per_mtok: string
  cache_read_usd_per_mtok: string
  cache_write_5m_usd_per_mtok: string
  cache_write_1h_usd_per_mtok: string
  effective_from: string
  effective_to: string | null
  source: string
}

export interface AuditEntry {
  id: number
  at: string
  actor: string
  actor_role: string
  action: string
  target_type: string
  target_id: string
  before: unknown
  after: unknown
  ip: string | null
}

/** Reads every page of a list endpoint (small lists: models, prices). */
export async function all<T>(path: string): Promise<T[]> {
  const out: T[] = []
  let cursor: string | null = null
  do {
    const sep: string = path.includes('?') ? '&' : '?'
    const pg: Page<T> = await get<Page<T>>(path + sep + 'limit=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''))
    out.push(...pg.items)
    cursor = pg.next_cursor
  } while (cursor)
  return out
}

// Plan headroom and seat economics (admin/headroom.go).

export interface HeadroomSample {
  sampled_at: string
  status: string
  claim: string
  utilization_5h: number | null
  reset_5h: string | null
  utilization_7d: number | null
  reset_7d: string | null
  reset_at: string | null
}

export interface FleetHeadroom extends HeadroomSample {
  user_id: string
  name: string
  email: string | null
  preempt_threshold: number | null
}

export interface HeadroomForecast {
  window: '5h' | '7d'
  utilization: number
  headroom: number
  reset_at: string | null
  burn_per_hour: number | null
  limit_at: string | null
  limit_before_reset: boolean
}

export interface UserHeadroom {
  user_id: string
  preempt_threshold: number | null
  current: HeadroomSample | null
  forecasts: HeadroomForecast[]
  history: HeadroomSample[]
  from: string
  to: string
}

export type SeatType = 'pro' | 'max_5x' | 'max_20x' | 'api'

export interface Seat {
  user_id: string
  name: string
  email: string | null
  seat_type: SeatType | null
  seat_price_usd: string | null
  plan_list_usd: string
  bedrock_usd: string
  bedrock_equivalent_usd: string
  requests: number
  fallbacks: number
  recommendation: 'keep' | 'upgrade' | 'downgrade' | 'switch' | 'set_seat'
  recommended_seat: SeatType | null
  reason: string
}

export interface Seats {
  month: string
  from: string
  to: string
  seat_prices_usd: Record<string, string>
  items: Seat[]
  timezone: string
}

export interface AdminAccount {
  id: string
  username: string
  disabled: boolean
  created_at: string
  last_login_at: string | null
  role: Role
  team_id: string | null
  sso: boolean
}

export interface SSOInfo {
  enabled: boolean
  login_url?: string
}

// Webhooks (admin/webhooks.go, docs/webhooks.md).

export type WebhookFormat = 'generic' | 'slack'

export interface Webhook {
  id: string
  name: string
  url: string
  format: WebhookFormat
  /** The types delivered; empty: all. */
  event_types: string[]
  enabled: boolean
  created_at: string
  updated_at: string
}

/** The answer to a creation: the only time the signing secret is shown. */
export interface CreatedWebhook extends Webhook {
  secret: string
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed'

export interface Delivery {
  id: string
  event_id: string
  event_type: string
  webhook_id: string
  status: DeliveryStatus
  attempts: number
  next_attempt_at: string | null
  last_attempt_at: string | null
  last_status_code: number | null
  last_error: string
  delivered_at: string | null
  created_at: string
}
