import { createContext, useContext } from 'react'
import { queryOptions } from '@tanstack/react-query'
import { ApiError, get, type Role, type Session } from './api'

export const SessionContext = createContext<Session | null>(null)

/** The logged-in session (inside the authenticated shell). */
export function useSession(): Session {
  const s = useContext(SessionContext)
  if (!s) throw new Error('useSession outside the authenticated shell')
  return s
}

/** Whether the admin may change things fleet-wide: viewers only read, and
 *  team admins change only their team's developers and keys
 *  (useCanManageDevelopers). The API decides; this only hides the controls
 *  a person could not use. */
export function useCanWrite(): boolean {
  const { role } = useSession()
  return role === 'owner' || role === 'admin'
}

/** Whether the admin may create and edit developers and their keys: a
 *  team admin may, within its team (admin/roles.go holds it there). */
export function useCanManageDevelopers(): boolean {
  const { role } = useSession()
  return role === 'owner' || role === 'admin' || role === 'team_admin'
}

/** Whether the role is held to one team: its dashboard is that team's
 *  developers and the team itself, the only routes the API gives it. */
export function isTeamAdmin(role: Role): boolean {
  return role === 'team_admin'
}

/** The session query: null when logged out. */
export const sessionQuery = queryOptions({
  queryKey: ['session'],
  queryFn: async (): Promise<Session | null> => {
    try {
      return await get<Session>('/auth/session')
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null
      throw e
    }
  },
  staleTime: 60_000,
  placeholderData: undefined,
})

/** Whether a role may see webhooks at all: admin/roles.go gives every
 *  webhook route, reads included, to admins and owners only (a URL can be
 *  a credential). The page and its nav entry exist only for them. */
export function mayManageWebhooks(role: Role): boolean {
  return role === 'owner' || role === 'admin'
}
