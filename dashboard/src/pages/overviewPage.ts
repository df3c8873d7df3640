import { preloadable } from '../preload'

/** The overview's code, which the login fetches before it navigates there. */
export const overviewPage = preloadable(() => import('./Overview'))
