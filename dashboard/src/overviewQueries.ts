// The overview's API calls, in the main bundle so that the login can start
// them as soon as the session is known, in parallel with the page's code:
// the page asks for the same query keys and finds them in flight or done.
import { queryOptions, type QueryClient } from '@tanstack/react-query'
import { get, qs, type CostSplit, type TopUsers, type Usage } from './api'
import { rangeFromParams, type Range } from './ranges'

/** The query options of the overview's six calls over range, in tz. */
export function overviewQueries(tz: string, range: Range) {
  const span = { from: range.from.toISOString(), to: range.to.toISOString() }
  const usage = (group_by: string) => () => get<Usage>('/usage' + qs({ ...span, group_by }))
  return {
    byProvider: queryOptions({ queryKey: ['usage', 'provider', span], queryFn: usage('provider') }),
    byDay: queryOptions({ queryKey: ['usage', 'day', span, tz], queryFn: () => get<Usage>('/usage' + qs({ ...span, group_by: 'day', tz })) }),
    byModel: queryOptions({ queryKey: ['usage', 'model', span], queryFn: usage('model') }),
    byReason: queryOptions({ queryKey: ['usage', 'fallback', span], queryFn: usage('fallback_reason') }),
    top: queryOptions({ queryKey: ['top-users', span], queryFn: () => get<TopUsers>('/usage/top-users' + qs({ ...span, limit: 10 })) }),
    split: queryOptions({ queryKey: ['cost-split', span], queryFn: () => get<CostSplit>('/usage/cost-split' + qs(span)) }),
  }
}

/**
 * Starts the overview's calls for the range its URL's query string search
 * asks for (at now), unless they are cached and fresh. Errors stay in the
 * cache for the page to show.
 */
export function prefetchOverview(qc: QueryClient, tz: string, search: string, now: Date = new Date()): void {
  const { range } = rangeFromParams(new URLSearchParams(search), tz, now)
  const q = overviewQueries(tz, range)
  void qc.prefetchQuery(q.byProvider)
  void qc.prefetchQuery(q.byDay)
  void qc.prefetchQuery(q.byModel)
  void qc.prefetchQuery(q.byReason)
  void qc.prefetchQuery(q.top)
  void qc.prefetchQuery(q.split)
}
