import { describe, expect, it } from 'vitest'
import { deliveryStatus, eventTypesLabel, exportURL, urlHost } from './webhooks'
import { mayManageWebhooks } from './session'

describe('urlHost', () => {
  it.each([
    ['https://hooks.slack.com/services/T000/B000/XXXX', 'hooks.slack.com'],
    ['http://127.0.0.1:9999/ccproxy?token=s3cret', '127.0.0.1:9999'],
    ['https://example.com:443/x', 'example.com'],
    ['https://[::1]:8443/', '[::1]:8443'],
    ['not a url', 'not a url'],
  ])('urlHost(%s) = %s', (url, want) => expect(urlHost(url)).toBe(want))
})

describe('eventTypesLabel', () => {
  it.each([
    [[], 'all'],
    [['key.created'], 'key.created'],
    [['key.created', 'breaker.opened'], 'key.created, breaker.opened'],
  ])('eventTypesLabel(%j) = %s', (types, want) => expect(eventTypesLabel({ event_types: types })).toBe(want))
})

describe('deliveryStatus', () => {
  const d = { attempts: 0, last_status_code: null, next_attempt_at: null }
  it.each([
    [{ ...d, status: 'pending' as const }, 'pending'],
    [{ ...d, status: 'delivered' as const, attempts: 1, last_status_code: 204 }, 'delivered (204)'],
    [{ ...d, status: 'pending' as const, attempts: 2, last_status_code: 503, next_attempt_at: '2026-12-07T10:00:30Z' }, 'retrying (503), next at 2026-12-07 10:00'],
    [{ ...d, status: 'pending' as const, attempts: 1 }, 'retrying'],
    [{ ...d, status: 'failed' as const, attempts: 15 }, 'failed after 15 attempts'],
    [{ ...d, status: 'failed' as const, attempts: 1, last_status_code: 410 }, 'failed after 1 attempt (410)'],
  ])('deliveryStatus(%j)', (v, want) => expect(deliveryStatus(v, 'UTC')).toBe(want))
})

describe('exportURL', () => {
  const from = new Date('2026-11-01T00:00:00Z')
  const to = new Date('2026-12-01T00:00:00Z')
  it('asks for the range, and the user when one is chosen', () => {
    expect(exportURL('daily', from, to)).toBe('/api/v1/usage/export/daily?from=2026-11-01T00%3A00%3A00.000Z&to=2026-12-01T00%3A00%3A00.000Z')
    expect(exportURL('requests', from, to, '0193a6f2-5c1e-7d4b-9a8e-2f4c6b8d0e1f')).toBe(
      '/api/v1/usage/export/requests?from=2026-11-01T00%3A00%3A00.000Z&to=2026-12-01T00%3A00%3A00.000Z&user_id=0193a6f2-5c1e-7d4b-9a8e-2f4c6b8d0e1f',
    )
    expect(exportURL('daily', from, to, '')).toBe('/api/v1/usage/export/daily?from=2026-11-01T00%3A00%3A00.000Z&to=2026-12-01T00%3A00%3A00.000Z')
  })
})

describe('mayManageWebhooks', () => {
  it.each([
    ['owner', true],
    ['admin', true],
    ['viewer', false],
    ['team_admin', false],
  ] as const)('%s: %s', (role, want) => expect(mayManageWebhooks(role)).toBe(want))
})
