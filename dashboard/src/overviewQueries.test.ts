import { afterEach, describe, expect, it, vi } from 'vitest'
import { QueryClient } from '@tanstack/react-query'
import { overviewQueries, prefetchOverview } from './overviewQueries'
import { rangeFromParams } from './ranges'

afterEach(() => {
  vi.unstubAllGlobals()
})

// Answers every GET with an empty body of the right shape and records the
// paths asked for.
function recordFetch() {
  const paths: string[] = []
  vi.stubGlobal('fetch', (url: string) => {
    paths.push(decodeURIComponent(url))
    const body = url.includes('/top-users') ? { active_users: 0, items: [] } : url.includes('/cost-split') ? { models: [], total: {} } : { groups: [] }
    return Promise.resolve(new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } }))
  })
  return paths
}

const now = new Date('2026-10-31T15:00:00Z')

describe('prefetchOverview', () => {
  it.each([
    ['', '2026-10-02T00:00:00.000Z', '2026-11-01T00:00:00.000Z'], // 30 days, the overview's default
    ['?range=month', '2026-10-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z'],
    ['?range=today', '2026-10-31T00:00:00.000Z', '2026-11-01T00:00:00.000Z'],
    ['?range=custom&start=2026-09-03&end=2026-09-04', '2026-09-03T00:00:00.000Z', '2026-09-05T00:00:00.000Z'],
    ['?range=bogus', '2026-10-02T00:00:00.000Z', '2026-11-01T00:00:00.000Z'],
  ])('search %j asks for the six calls of the overview over [%s, %s)', async (search, from, to) => {
    const paths = recordFetch()
    const qc = new QueryClient()
    prefetchOverview(qc, 'UTC', search, now)
    await vi.waitFor(() => expect(qc.isFetching()).toBe(0))
    const span = `from=${from}&to=${to}`
    expect(paths.sort()).toEqual(
      [
        `/api/v1/usage?${span}&group_by=provider`,
        `/api/v1/usage?${span}&group_by=day&tz=UTC`,
        `/api/v1/usage?${span}&group_by=model`,
        `/api/v1/usage?${span}&group_by=fallback_reason`,
        `/api/v1/usage/top-users?${span}&limit=10`,
        `/api/v1/usage/cost-split?${span}`,
      ].sort(),
    )
  })

  it('fills the queries the overview page reads', async () => {
    recordFetch()
    const qc = new QueryClient()
    prefetchOverview(qc, 'Europe/Paris', '?range=7d', now)
    await vi.waitFor(() => expect(qc.isFetching()).toBe(0))
    const { range } = rangeFromParams(new URLSearchParams('range=7d'), 'Europe/Paris', now)
    for (const [name, q] of Object.entries(overviewQueries('Europe/Paris', range))) {
      expect(qc.getQueryState(q.queryKey)?.status, name).toBe('success')
    }
  })

  it('does not ask again for fresh answers', async () => {
    const paths = recordFetch()
    const qc = new QueryClient({ defaultOptions: { queries: { staleTime: 30_000 } } })
    prefetchOverview(qc, 'UTC', '', now)
    await vi.waitFor(() => expect(qc.isFetching()).toBe(0))
    prefetchOverview(qc, 'UTC', '', now)
    await vi.waitFor(() => expect(qc.isFetching()).toBe(0))
    expect(paths).toHaveLength(6)
  })
})
