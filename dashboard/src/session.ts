import { createContext, useContext } from 'react'
import type { Session } from './api'

export const SessionContext = createContext<Session | null>(null)

/** The logged-in session (inside the authenticated shell). */
export function useSession(): Session {
  const s = useContext(SessionContext)
  if (!s) throw new Error('useSession outside the authenticated shell')
  return s
}
