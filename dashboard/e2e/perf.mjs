// The dashboard's speed on a big database, run by scripts/dashboard-perf.sh
// (`make dashboard-perf`) against a running `ccproxy admin`; a measurement,
// never a test: it prints numbers and whether they meet the targets.
//
//  1. First load after login, cold (a new browser profile each run): the
//     login page, then from the login's answer to the overview showing all
//     its data (every card filled, every chart drawn, the top developers
//     and the cost split listed).
//  2. Every GET /api/v1 call the pages make (the overview at each range
//     preset, the developer list, a developer, models and prices, the
//     audit log), each repeated with the session cookie: median and worst
//     of RUNS.
//  3. The bytes: the first page (HTML and what it loads eagerly) and the
//     chunks the overview adds, gzip as served, from dashboard/dist.
//
// The browser's clock is set to NOW, so that the range presets ("today",
// "this month", "30 days", …) fall on the database's data; the developer
// list is asked for MONTH as well, since the server's own month may hold
// no usage.
//
// Environment: ADMIN (URL), USERNAME, PASSWORD, NOW (RFC 3339), MONTH
// (YYYY-MM), RUNS (default 7), LOADS (first loads, default 3), API (0: first
// loads only), CHROMIUM.
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (k, d) => {
  const v = process.env[k] ?? d
  if (!v) throw new Error(`${k} is not set`)
  return v
}
const ADMIN = env('ADMIN')
const USERNAME = env('USERNAME', 'admin')
const PASSWORD = env('PASSWORD')
const NOW = new Date(env('NOW', '2026-10-31T15:00:00Z'))
const MONTH = env('MONTH', '2026-10')
const RUNS = Number(env('RUNS', '7'))
const LOADS = Number(env('LOADS', '3'))
const dist = new URL('../dist/', import.meta.url).pathname

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const ms = (v) => `${v.toFixed(1)} ms`

// The overview has shown everything: no skeleton, no chart placeholder,
// six charts, the top developers and the cost split.
const overviewShown = () =>
  !document.querySelector('.skeleton') &&
  !document.querySelector('[aria-busy=true]') &&
  document.querySelectorAll('.recharts-surface').length >= 6 &&
  !!document.querySelector('.toplist') &&
  !!document.querySelector('[data-testid=split-total]')

async function browser() {
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'ccproxy-perf-')), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    locale: 'en-US',
  })
  // The page's Date runs from NOW (time flows on). Only Date: Playwright's
  // clock would also replace the performance timeline read below.
  await context.addInitScript((offset) => {
    const RealDate = Date
    class ShiftedDate extends RealDate {
      constructor(...args) {
        if (args.length === 0) super(RealDate.now() + offset)
        else super(...args)
      }
      static now() {
        return RealDate.now() + offset
      }
    }
    globalThis.Date = ShiftedDate
    // The main thread's long tasks (≥ 50 ms: script, style, layout,
    // paint), printed with each first load's requests like the browser's
    // performance panel would show them.
    globalThis.__longTasks = []
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) globalThis.__longTasks.push({ start: e.startTime, ms: e.duration })
    }).observe({ type: 'longtask', buffered: true })
    // The page's own clock of the overview: when the requests card first
    // holds its number and when everything is shown, checked each frame
    // (a frame is when the browser can paint), as performance marks.
    const tick = () => {
      if (!performance.getEntriesByName('overview-numbers').length && document.querySelector('[data-testid=card-requests] .num'))
        performance.mark('overview-numbers')
      if (globalThis.__overviewShown?.()) performance.mark('overview-shown')
      else requestAnimationFrame(tick)
    }
    requestAnimationFrame(tick)
  }, NOW.getTime() - Date.now())
  await context.addInitScript(`globalThis.__overviewShown = ${overviewShown.toString()}`)
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(60_000)
  return { context, page }
}

// 1. First loads, each in a new profile (nothing cached).
const loads = []
let overviewAssets = []
for (let i = 0; i < LOADS; i++) {
  const { context, page } = await browser()
  try {
    const t0 = Date.now()
    await page.goto(ADMIN + '/')
    await page.waitForURL(/\/login/)
    await page.getByLabel('Username').waitFor()
    const loginPage = Date.now() - t0
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0]
      return { domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd }
    })
    await page.getByLabel('Username').fill(USERNAME)
    await page.getByLabel('Password').fill(PASSWORD)
    const clicked = Date.now()
    const answered = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/login'))
    await page.getByRole('button', { name: 'Log in' }).click()
    const resp = await answered
    if (resp.status() !== 200 && resp.status() !== 204) throw new Error(`login answered ${resp.status()}`)
    const loginDone = Date.now()
    await page.getByTestId('card-requests').locator('.num').waitFor()
    const numbers = Date.now() - loginDone
    await page.waitForFunction(overviewShown, null, { polling: 'raf' })
    const shown = Date.now() - loginDone
    const resources = await page.evaluate(() =>
      performance.getEntriesByType('resource').map((r) => ({ path: new URL(r.name).pathname, start: r.startTime, ms: r.duration })),
    )
    const longTasks = await page.evaluate(() => globalThis.__longTasks)
    // The same two moments by the page's clock, from the end of the login's
    // answer (no round trips to this process in them).
    const marks = await page.evaluate(() => {
      const login = performance.getEntriesByType('resource').find((r) => r.name.endsWith('/api/v1/auth/login'))
      const at = (n) => performance.getEntriesByName(n)[0]?.startTime
      return { login: login.responseEnd, numbers: at('overview-numbers'), shown: at('overview-shown') }
    })
    overviewAssets = resources.filter((r) => r.path.startsWith('/assets/')).map((r) => r.path)
    const api = resources.filter((r) => r.path.startsWith('/api/v1/usage'))
    const pageNumbers = Math.round(marks.numbers - marks.login)
    const pageShown = Math.round(marks.shown - marks.login)
    loads.push({ loginPage, ...nav, login: loginDone - clicked, numbers, shown, pageNumbers, pageShown, slowestApiCall: Math.max(...api.map((r) => r.ms)) })
    const timeline = [
      ...resources.map((r) => ({ start: r.start, line: `  ${r.start.toFixed(0).padStart(6)} ms +${r.ms.toFixed(0).padStart(5)} ms ${r.path}` })),
      ...longTasks.map((t) => ({ start: t.start, line: `  ${t.start.toFixed(0).padStart(6)} ms +${t.ms.toFixed(0).padStart(5)} ms (long task on the main thread)` })),
      { start: marks.numbers, line: `  ${marks.numbers.toFixed(0).padStart(6)} ms         overview: the numbers are shown` },
      { start: marks.shown, line: `  ${marks.shown.toFixed(0).padStart(6)} ms         overview: everything is shown` },
    ].sort((a, b) => a.start - b.start)
    for (const e of timeline) console.log(e.line)
    console.log(`first load ${i + 1}: login page ${loginPage} ms (DOMContentLoaded ${nav.domContentLoaded.toFixed(0)} ms); login answered in ${loginDone - clicked} ms; overview numbers ${numbers} ms and everything ${shown} ms after that answer (by the page's clock ${pageNumbers} ms and ${pageShown} ms)`)
  } finally {
    await context.close()
  }
}

const firstLoad = {
  loginPageMs: median(loads.map((l) => l.loginPage)),
  loginMs: median(loads.map((l) => l.login)),
  numbersMs: median(loads.map((l) => l.numbers)),
  shownMs: median(loads.map((l) => l.shown)),
  worstShownMs: Math.max(...loads.map((l) => l.shown)),
  pageNumbersMs: median(loads.map((l) => l.pageNumbers)),
  pageShownMs: median(loads.map((l) => l.pageShown)),
}
const firstLoadLine = () =>
  `first load after login (median of ${LOADS}): numbers ${firstLoad.numbersMs} ms, everything ${firstLoad.shownMs} ms (worst ${firstLoad.worstShownMs} ms) after the login's answer ${firstLoad.shownMs < 1000 ? '✓' : '✗'} < 1 s (by the page's clock ${firstLoad.pageNumbersMs} ms and ${firstLoad.pageShownMs} ms); the login itself ${firstLoad.loginMs} ms, the login page ${firstLoad.loginPageMs} ms`

if (process.env.API === '0') {
  console.log('\n' + firstLoadLine())
  console.log('RESULT ' + JSON.stringify({ loads, firstLoad }))
  process.exit(0)
}

// 2. The API calls of every page, as the pages make them.
const { context, page } = await browser()
const calls = new Set()
page.on('request', (r) => {
  const u = new URL(r.url())
  if (r.method() === 'GET' && u.pathname.startsWith('/api/v1/') && u.pathname !== '/api/v1/openapi.json') calls.add(u.pathname + u.search)
})
await page.goto(ADMIN + '/login')
await page.getByLabel('Username').fill(USERNAME)
await page.getByLabel('Password').fill(PASSWORD)
await page.getByRole('button', { name: 'Log in' }).click()
await page.waitForFunction(overviewShown, null, { polling: 'raf' })
const visit = async (path, ready) => {
  await page.goto(ADMIN + path)
  await ready()
  await page.waitForLoadState('networkidle')
}
for (const preset of ['today', '7d', '30d', 'month', 'last-month']) {
  await visit('/?range=' + preset, () => page.waitForFunction(overviewShown, null, { polling: 'raf' }))
}
await visit('/developers', () => page.locator('table.data tbody tr').first().waitFor())
await visit('/developers?sort=name&order=asc', () => page.locator('table.data tbody tr').first().waitFor())
// The developer with the most spend in MONTH, the busiest kind of page.
const cookies = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ')
const get = async (path) => {
  const t = performance.now()
  const r = await fetch(ADMIN + path, { headers: { cookie: cookies } })
  const body = await r.arrayBuffer()
  const took = performance.now() - t
  // 404: a credential that is not set, which the page shows as such.
  if (r.status !== 200 && r.status !== 404) throw new Error(`${path}: ${r.status} ${new TextDecoder().decode(body)}`)
  return { took, status: r.status, body: JSON.parse(new TextDecoder().decode(body)), bytes: body.byteLength }
}
const top = (await get(`/api/v1/developers?sort=spend&order=desc&limit=1&month=${MONTH}`)).body.items[0]
await visit('/developers/' + top.id, () => page.locator('h1', { hasText: top.name }).first().waitFor())
await visit('/models', () => page.getByRole('heading', { name: /Models/ }).first().waitFor())
await visit('/audit', () => page.getByRole('heading', { name: /Audit/ }).first().waitFor())
await context.close()

// The server's month may hold no usage: the developer list of MONTH and a
// developer's sessions of the browser's 30 days too.
const extra = []
for (const c of calls) {
  if (c.startsWith('/api/v1/developers?')) extra.push(c + '&month=' + MONTH)
  const m = c.match(/^\/api\/v1\/users\/([^/]+)\/sessions\?(.*)$/)
  if (m) {
    const to = new Date(Date.UTC(NOW.getUTCFullYear(), NOW.getUTCMonth(), NOW.getUTCDate() + 1))
    const from = new Date(to.getTime() - 30 * 864e5)
    extra.push(`${c}&from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`)
  }
}
const rows = []
for (const path of [...[...calls].sort(), ...extra]) {
  await get(path) // warm: the first call after a page change also fills caches
  const times = []
  let bytes = 0
  for (let i = 0; i < RUNS; i++) {
    const r = await get(path)
    times.push(r.took)
    bytes = r.bytes
  }
  rows.push({ path, median: median(times), max: Math.max(...times), bytes })
}
console.log('\nAPI calls of the pages (median and worst of ' + RUNS + ', after one warm-up):')
for (const r of rows) console.log(`${r.median < 100 ? '✓' : '✗'} ${ms(r.median).padStart(9)} (max ${ms(r.max).padStart(9)}) ${String(r.bytes).padStart(7)} B  ${decodeURIComponent(r.path)}`)

// 3. Bytes, gzip as served.
const gz = (f) => statSync(join(dist, f + '.gz')).size
const html = readFileSync(join(dist, 'index.html'), 'utf8')
const eager = [...html.matchAll(/(?:src|href)="\/([^"]+\.(?:js|css))"/g)].map((m) => m[1])
const firstPage = ['index.html', ...eager].reduce((n, f) => n + gz(f), 0)
const overviewExtra = [...new Set(overviewAssets.map((p) => p.slice(1)))].filter((f) => !eager.includes(f)).reduce((n, f) => n + gz(f), 0)

const summary = {
  firstLoad,
  slowestCall: rows.reduce((a, b) => (a.median >= b.median ? a : b)),
  firstPageKB: +(firstPage / 1024).toFixed(1),
  overviewAddsKB: +(overviewExtra / 1024).toFixed(1),
}
console.log('\n' + firstLoadLine())
console.log(`slowest API call: ${ms(summary.slowestCall.median)} ${summary.slowestCall.median < 100 ? '✓' : '✗'} < 100 ms (${decodeURIComponent(summary.slowestCall.path)})`)
console.log(`first page: ${summary.firstPageKB} KB gzip ${summary.firstPageKB <= 350 ? '✓' : '✗'} ≤ 350 KB; the overview adds ${summary.overviewAddsKB} KB gzip`)
console.log('RESULT ' + JSON.stringify({ loads, calls: rows, ...summary }))
