// Helpers of the Webhooks and Exports pages: what a list cell shows and the
// address of an export. Kept apart from the pages so that vitest checks them
// without a DOM.
import { qs, type Delivery, type Webhook } from './api'
import { dateTime } from './format'

/** The event types ccproxy sends (notifications.Types in admin/notifications). */
export const eventTypes = ['key.created', 'key.revoked', 'credential.refused', 'breaker.opened', 'budget.threshold', 'webhook.test'] as const

/**
 * The host of a webhook URL, with its port when not the scheme's default.
 * Only the host is shown in the list: a URL can itself be a credential
 * (Slack's incoming webhooks are), so the full URL stays in the edit form.
 */
export function urlHost(url: string): string {
  try {
    return new URL(url).host || url
  } catch {
    return url
  }
}

/** The event types a webhook takes: "all" when it has no filter. */
export function eventTypesLabel(w: Pick<Webhook, 'event_types'>): string {
  return w.event_types.length === 0 ? 'all' : w.event_types.join(', ')
}

/**
 * A delivery's outcome in words: "delivered (200)", "retrying (503), next
 * at …", "failed after 15 attempts (timeout)", "pending". The error is the
 * last attempt's.
 */
export function deliveryStatus(d: Pick<Delivery, 'status' | 'attempts' | 'last_status_code' | 'next_attempt_at'>, tz: string): string {
  const code = d.last_status_code === null ? '' : ` (${d.last_status_code})`
  switch (d.status) {
    case 'delivered':
      return 'delivered' + code
    case 'failed':
      return `failed after ${d.attempts} ${d.attempts === 1 ? 'attempt' : 'attempts'}` + code
    case 'pending':
      if (d.attempts === 0) return 'pending'
      return 'retrying' + code + (d.next_attempt_at ? ', next at ' + dateTime(d.next_attempt_at, tz) : '')
  }
}

/** Export granularities: the two CSV endpoints of admin/export.go. */
export type Granularity = 'requests' | 'daily'

/**
 * The address of a usage export over [from, to), optionally of one user:
 * same origin as the dashboard, so the browser's download carries the
 * session cookie.
 */
export function exportURL(g: Granularity, from: Date, to: Date, userID?: string): string {
  return '/api/v1/usage/export/' + g + qs({ from: from.toISOString(), to: to.toISOString(), user_id: userID })
}
