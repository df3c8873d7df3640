// Pages whose code can be fetched before they are shown. React.lazy
// suspends on its first render even when the code is already here, and
// React 19 holds the reveal of suspended content until 300 ms after its
// fallback appeared; a page preloaded before navigating renders at once.
import { createElement, lazy, useState, type ComponentType } from 'react'

export interface Preloadable<P extends object> {
  /** Renders the page, suspending only while its code is not here yet. */
  Component: ComponentType<P>
  /** Fetches the page's code (once); resolves when it is here. */
  preload: () => Promise<void>
}

export function preloadable<P extends object>(load: () => Promise<{ default: ComponentType<P> }>): Preloadable<P> {
  let loaded: ComponentType<P> | undefined
  let pending: Promise<{ default: ComponentType<P> }> | undefined
  const start = () => {
    pending ??= load().then(
      (m) => {
        loaded = m.default
        return m
      },
      (e: unknown) => {
        pending = undefined // a failed fetch is tried again
        throw e
      },
    )
    return pending
  }
  const Lazy = lazy(start)
  function Component(props: P) {
    // Chosen once per mount: switching from Lazy to the loaded component
    // later would remount the page.
    const [type] = useState<ComponentType<P>>(() => loaded ?? Lazy)
    return createElement(type, props)
  }
  return { Component, preload: () => start().then(() => undefined) }
}
