import { Link, useParams } from 'react-router'
import { useQuery } from '@tanstack/react-query'
import { get, type AgentNode, type SessionTree, type User } from '../api'
import { dateTime, duration, integer } from '../format'
import { useSession } from '../session'
import { Money, Tokens } from '../components/Money'
import { ErrorState, Loading } from '../components/States'
import { BreaksTable, CacheCards, Card } from '../components/Cache'

const sources: Record<SessionTree['tree_source'], string> = {
  none: 'No subagents in this session.',
  header: 'Parents as Claude Code reported them (x-claude-code-parent-agent-id).',
  inferred:
    'Parents inferred: Claude Code does not say which agent spawned a subagent, so each subagent is matched to the latest earlier answer that called the Agent (or Task) tool.',
}

const parentSources: Record<AgentNode['parent_source'], string> = {
  root: '—',
  header: 'reported',
  spawn: 'inferred from an Agent call',
  assumed: 'assumed (no Agent call seen)',
  unseen: 'named by a subagent, no requests',
}

/** The agent tree of one Claude Code session, with its prompt-cache economics. */
export default function SessionDetail() {
  const { id = '', sid = '' } = useParams()
  const { billing_timezone: tz } = useSession()
  const user = useQuery({ queryKey: ['user', id], queryFn: () => get<User>('/users/' + id) })
  const tree = useQuery({
    queryKey: ['session-tree', id, sid],
    queryFn: () => get<SessionTree>('/users/' + id + '/sessions/' + encodeURIComponent(sid)),
  })
  if (tree.isPending) return <Loading label="Loading the session" />
  if (tree.isError) return <ErrorState error={tree.error} retry={() => tree.refetch()} />
  const t = tree.data
  const rows = flatten(t.root, 0)
  return (
    <section aria-labelledby="sd-h">
      <p className="crumbs">
        <Link to="/developers">Developers</Link> / <Link to={'/developers/' + id}>{user.data?.name ?? 'Developer'}</Link> /
      </p>
      <div className="page-head">
        <h1 id="sd-h">
          Session <code>{t.session_id}</code>
        </h1>
      </div>
      <div className="cards">
        <Card label="Cost" testid="sd-cost">
          <Money value={t.cost_usd} />
        </Card>
        <Card label="Requests" testid="sd-requests">
          <span className="num">{integer(t.requests)}</span>
        </Card>
        <Card label="Agents" testid="sd-agents">
          <span className="num">{integer(rows.filter((r) => r.node.requests > 0).length)}</span>
        </Card>
        <Card label="Duration" testid="sd-duration">
          <span className="num">{longDuration(t.duration_ms)}</span>
        </Card>
      </div>
      <p className="muted">
        {dateTime(t.first_at, tz)} – {dateTime(t.last_at, tz)}
      </p>

      <h2 id="tree-h">Agents</h2>
      <p className="muted" data-testid="tree-source">
        {sources[t.tree_source]}
      </p>
      <table className="data" aria-labelledby="tree-h" data-testid="agent-tree">
        <thead>
          <tr>
            <th scope="col">Agent</th>
            <th scope="col">Parent</th>
            <th scope="col" className="r">Requests</th>
            <th scope="col">Models</th>
            <th scope="col" className="r">Tokens</th>
            <th scope="col" className="r">Duration</th>
            <th scope="col" className="r">Fallbacks</th>
            <th scope="col" className="r">Own cost</th>
            <th scope="col" className="r">With subagents</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(({ node: n, depth }) => (
            <tr key={n.agent_id || 'main'} data-agent={n.agent_id || 'main'}>
              <td style={{ paddingLeft: `${0.5 + depth * 1.5}rem` }}>
                {depth > 0 && <span aria-hidden="true">└ </span>}
                {n.agent_id ? <code>{n.agent_id}</code> : 'Main agent'}
              </td>
              <td title={n.spawned_by_request_id ? 'Spawned by request ' + n.spawned_by_request_id : undefined}>{parentSources[n.parent_source]}</td>
              <td className="r num">{integer(n.requests)}</td>
              <td>{n.models.join(', ')}</td>
              <td className="r num">
                <Tokens value={n.input_tokens + n.output_tokens + n.cache_read_tokens + n.cache_write_5m_tokens + n.cache_write_1h_tokens} />
              </td>
              <td className="r num">{n.requests > 0 ? longDuration(n.duration_ms) : '—'}</td>
              <td className="r num">{integer(n.fallbacks)}</td>
              <td className="r" data-testid="own-cost">
                <Money value={n.cost_usd} />
              </td>
              <td className="r">
                <Money value={n.subtree_cost_usd} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Prompt cache</h2>
      <CacheCards c={t.cache} />
      <h3 id="breaks-h">Cache breaks</h3>
      <BreaksTable breaks={t.cache_breaks} tz={tz} labelledBy="breaks-h" />
    </section>
  )
}

function flatten(n: AgentNode, depth: number): { node: AgentNode; depth: number }[] {
  return [{ node: n, depth }, ...n.children.flatMap((c) => flatten(c, depth + 1))]
}

/** "850 ms", "12.3 s", "4 min 05 s", "1 h 02 min". */
function longDuration(ms: number): string {
  if (ms < 60_000) return duration(ms)
  const s = Math.round(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`
}

