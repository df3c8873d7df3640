import { describe, expect, it } from 'vitest'
import { createElement, Suspense } from 'react'
import { renderToString } from 'react-dom/server'
import { preloadable } from './preload'

function Page({ name }: { name: string }) {
  return createElement('h1', null, 'Hello ' + name)
}

describe('preloadable', () => {
  it('renders a preloaded page at once, without its fallback', async () => {
    const p = preloadable(() => Promise.resolve({ default: Page }))
    await p.preload()
    const html = renderToString(createElement(Suspense, { fallback: 'loading' }, createElement(p.Component, { name: 'perf' })))
    // `<!--$-->` is a boundary shown complete; a fallback would be `<!--$!-->`.
    expect(html).toBe('<!--$--><h1>Hello perf</h1><!--/$-->')
  })

  it('shows the fallback while the code is not here', () => {
    const p = preloadable(() => new Promise<{ default: typeof Page }>(() => {}))
    const html = renderToString(createElement(Suspense, { fallback: 'loading' }, createElement(p.Component, { name: 'perf' })))
    expect(html).toContain('loading')
  })

  it('fetches the code once', async () => {
    let loads = 0
    const p = preloadable(() => {
      loads++
      return Promise.resolve({ default: Page })
    })
    await Promise.all([p.preload(), p.preload()])
    await p.preload()
    expect(loads).toBe(1)
  })

  it('tries a failed fetch again', async () => {
    let loads = 0
    const p = preloadable<{ name: string }>(() => (++loads === 1 ? Promise.reject(new Error('offline')) : Promise.resolve({ default: Page })))
    await expect(p.preload()).rejects.toThrow('offline')
    await p.preload()
    expect(loads).toBe(2)
  })
})
