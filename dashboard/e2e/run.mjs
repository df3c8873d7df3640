// The dashboard's browser test, driven by test/e2e/dashboard_test.go: it
// starts `ccproxy dev` (fake Anthropic upstream, throwaway database) and
// runs this script with Debian's chromium through playwright-core. Every
// step asserts what a person would see; the values the Go test checks
// against the API are printed as one JSON line at the end ("RESULT {…}").
//
// Environment: ADMIN (the admin URL), GATEWAY (the gateway URL), PASSWORD
// (of the admin "admin"), CONTROL (the Go test's control server: expire
// sessions), ARTIFACTS (screenshot directory), CHROMIUM (executable).
import { mkdtempSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (k) => {
  const v = process.env[k]
  if (!v) throw new Error(`${k} is not set`)
  return v
}
const ADMIN = env('ADMIN')
const GATEWAY = env('GATEWAY')
const PASSWORD = env('PASSWORD')
const CONTROL = env('CONTROL')
const ARTIFACTS = env('ARTIFACTS')
mkdirSync(ARTIFACTS, { recursive: true })

const result = {}
const started = Date.now()
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`)
function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg)
}
async function eventually(what, fn, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ': ' + last.message : ''}`)
    await new Promise((r) => setTimeout(r, 1000))
  }
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'ccproxy-chromium-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
  timezoneId: 'UTC',
  locale: 'en-US',
})
// Cumulative layout shift of each page load, as browsers measure it: the
// page must not jump when its data arrives.
await context.addInitScript(() => {
  window.__cls = 0
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls += e.value
  }).observe({ type: 'layout-shift', buffered: true })
})
const page = context.pages()[0] ?? (await context.newPage())
page.setDefaultTimeout(30_000)
const consoleErrors = []
// Expected failures (401 after the session ends, 404 for a credential not set) are logged by the browser as resource errors.
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && consoleErrors.push(m.text()))
page.on('pageerror', (e) => consoleErrors.push(String(e)))

const shot = async (name) => {
  await page.screenshot({ path: join(ARTIFACTS, name + '.png'), fullPage: true })
  log('screenshot ' + name)
}
const text = async (sel) => (await page.locator(sel).innerText()).trim()

try {
  // Login: a first visit goes to the login page; a wrong password says so.
  log('open')
  const t0 = Date.now()
  await page.goto(ADMIN + '/')
  await page.waitForURL(/\/login\?next=%2F$/)
  await page.getByLabel('Username').fill('admin')
  await page.getByLabel('Password').fill('not-the-password')
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor()
  await shot('01-login-wrong-password')

  await page.getByLabel('Password').fill(PASSWORD)
  const loginAt = Date.now()
  const loggedIn = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/login'))
  await page.getByRole('button', { name: 'Log in' }).click()
  await loggedIn
  const loginDone = Date.now()
  await page.getByRole('heading', { name: 'Overview' }).waitFor()
  await page.getByTestId('card-requests').locator('.num').waitFor()
  result.numbersMs = Date.now() - loginDone
  await page.locator('.recharts-surface').first().waitFor()
  // From the login's answer (its argon2 check excluded) to the overview
  // with its numbers and charts.
  result.firstLoadMs = Date.now() - loginDone
  result.loginMs = loginDone - loginAt
  result.loginPageMs = loginAt - t0
  log(`login answered in ${result.loginMs} ms; the overview's numbers ${result.numbersMs} ms later, its charts ${result.firstLoadMs} ms later`)
  // Where that time went: each script and API call of the page's life.
  for (const e of await page.evaluate(() =>
    performance.getEntriesByType('resource').map((r) => ({ name: new URL(r.name).pathname + new URL(r.name).search.slice(0, 40), start: Math.round(r.startTime), ms: Math.round(r.duration), bytes: r.transferSize })),
  ))
    log(`  ${String(e.start).padStart(6)} ms +${String(e.ms).padStart(5)} ms ${String(e.bytes).padStart(7)} B ${e.name}`)

  // Create a developer.
  await page.getByRole('link', { name: 'Developers' }).click()
  await page.getByRole('heading', { name: 'Developers' }).waitFor()
  await page.getByRole('button', { name: 'New developer' }).click()
  const dlg = page.getByRole('dialog', { name: 'New developer' })
  await dlg.getByLabel('Name').fill('Ada Browser')
  await dlg.getByLabel('Email').fill('ada.browser@example.com')
  await dlg.getByRole('button', { name: 'Create' }).click()
  await page.getByRole('heading', { name: 'Ada Browser' }).waitFor()
  const devURL = page.url()
  result.developerId = devURL.split('/').pop()
  log('developer ' + result.developerId)

  // Issue a key and read it from the dialog.
  await page.getByRole('button', { name: 'Issue key' }).click()
  const issue = page.getByRole('dialog', { name: 'Issue an access key' })
  await issue.getByLabel(/Name/).fill('laptop')
  await issue.getByRole('button', { name: 'Issue' }).click()
  const shown = page.getByRole('dialog', { name: 'New access key' })
  await shown.waitFor()
  const key = await shown.getByTestId('issued-key').inputValue()
  const line = (await shown.getByTestId('export-line').innerText()).trim()
  assert(/^ak_/.test(key), `issued key ${key}`)
  assert(line === `export ANTHROPIC_BASE_URL=${GATEWAY}/ak/${key}`, `export line ${line}`)
  result.key = key
  await shot('04-key-issued')
  await shown.getByRole('button', { name: 'Done' }).click()

  // A real request through the gateway with that key (the fake upstream
  // answers with fixed usage).
  const send = () =>
    fetch(`${GATEWAY}/ak/${key}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': 'sk-ant-test',
        'x-claude-code-session-id': 'browser-session-1' },
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'dashboard browser test' }] }),
    })
  const resp = await send()
  result.gatewayStatus = resp.status
  assert(resp.status === 200, `gateway answered ${resp.status}: ${await resp.text()}`)
  log('request sent through the gateway')

  // It appears in the developer's recent requests, with its cost, once the
  // ingester stored it.
  const waited = await fetch(CONTROL + '/wait-usage?n=1&session=browser-session-1', { method: 'POST' })
  assert(waited.status === 204, 'usage row: ' + (await waited.text()))
  const row = await eventually('the request in recent requests', async () => {
    await page.reload()
    await page.getByRole('heading', { name: 'Recent requests' }).waitFor()
    await page.locator('[data-testid=recent-requests], .panel:has(#req-h) .state').first().waitFor()
    const r = page.getByTestId('recent-requests').locator('tbody tr').first()
    if ((await r.count()) === 0) return null
    return (await r.innerText()).replace(/\s+/g, ' ')
  })
  result.recentRow = row
  log('recent request: ' + row)
  const keyRow = (await page.locator('[data-testid^="key-"]').first().innerText()).replace(/\s+/g, ' ')
  result.keyRow = keyRow
  await shot('05-developer-detail')

  // Set a budget and see the bar.
  await page.getByLabel(/Budget \(USD per month/).fill('1.00')
  await page.getByRole('button', { name: 'Set budget' }).click()
  const meter = page.getByRole('meter', { name: 'Bedrock spend this month against the budget' })
  await meter.waitFor()
  result.budgetMeter = await meter.getAttribute('aria-valuetext')
  result.budgetText = (await text('[data-testid=budget-status]')).replace(/\s+/g, ' ')
  log('budget: ' + result.budgetMeter)

  // Set a rate limit and see it in effect.
  await page.getByLabel('Requests per minute').fill('5')
  await page.getByLabel('Output tokens per minute').fill('20000')
  await page.getByRole('button', { name: 'Save limits' }).click()
  const limits = page.locator('[data-testid^="limits-status"]')
  await eventually('the limits in effect', async () => ((await limits.innerText()).startsWith('In effect') ? true : null))
  result.rateLimits = (await limits.innerText()).replace(/\s+/g, ' ')
  log('rate limits: ' + result.rateLimits)

  // Overview totals for today include the request.
  await page.goto(ADMIN + '/?range=today')
  await eventually('today on the overview', async () => (await text('[data-testid=card-requests] .num')) === '1')
  result.today = {
    plan: await text('[data-testid=card-plan] .num'),
    bedrock: await text('[data-testid=card-bedrock] .num'),
    requests: await text('[data-testid=card-requests] .num'),
    tokens: await text('[data-testid=card-tokens] .num'),
    cache: await text('[data-testid=card-cache] .num'),
    active: await text('[data-testid=card-active] .num'),
  }
  log('today: ' + JSON.stringify(result.today))

  // The seeded month.
  await page.goto(ADMIN + '/?range=last-month')
  await eventually('last month on the overview', async () => (await text('[data-testid=card-requests] .num')) !== '1')
  await page.getByTestId('split-total').waitFor()
  await page.locator('.recharts-surface').first().waitFor()
  result.lastMonth = {
    plan: await text('[data-testid=card-plan] .num'),
    bedrock: await text('[data-testid=card-bedrock] .num'),
    requests: await text('[data-testid=card-requests] .num'),
    tokens: await text('[data-testid=card-tokens] .num'),
    fallback: await text('[data-testid=card-fallback] .num'),
    active: await text('[data-testid=card-active] .num'),
    splitTotal: await text('[data-testid=split-total]'),
    range: await text('[data-testid=range-label]'),
  }
  log('last month: ' + JSON.stringify(result.lastMonth))
  result.overviewCLS = await page.evaluate(() => window.__cls)
  await shot('02-overview')
  // The narrowest supported width.
  await page.setViewportSize({ width: 1024, height: 800 })
  await shot('02-overview-1024')
  result.overflow1024 = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
  await page.setViewportSize({ width: 1280, height: 900 })

  // The developer list shows the budget bar.
  await page.goto(ADMIN + '/developers?sort=name&order=asc')
  await page.getByRole('meter', { name: 'Budget of Ada Browser' }).waitFor()
  result.listMeter = await page.getByRole('meter', { name: 'Budget of Ada Browser' }).getAttribute('aria-valuetext')
  await shot('03-developers')

  // Revoke the key; the gateway refuses it.
  await page.goto(devURL)
  await page.getByRole('button', { name: 'Revoke' }).click()
  const confirm = page.getByRole('dialog', { name: 'Revoke this key?' })
  await confirm.getByRole('button', { name: 'Revoke key' }).click()
  await confirm.waitFor({ state: 'hidden' })
  await page.locator('[data-testid^="key-"]').filter({ hasText: 'revoked' }).waitFor()
  result.revokedStatus = await eventually('the gateway refuses the revoked key', async () => {
    const r = await send()
    await r.arrayBuffer()
    return r.status === 401 ? r.status : null
  }, 15_000)
  log('revoked key refused: ' + result.revokedStatus)

  // Models & prices.
  await page.goto(ADMIN + '/models')
  await page.getByRole('heading', { name: 'Model mappings' }).waitFor()
  await page.getByTestId('unmapped').waitFor()
  await shot('06-models')

  // Plan & seats: the seeded developer's Plan headroom (a reading the Go
  // test stored) and last month's seat economics; then the same reading
  // on the developer's page, with the forecast per window.
  const now = new Date()
  const lastMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1)).toISOString().slice(0, 7)
  await page.getByRole('link', { name: 'Plan & seats' }).click()
  await page.getByRole('heading', { name: 'Plan & seats' }).waitFor()
  const headroomRow = page.getByTestId('headroom').locator('tbody tr').filter({ hasText: 'Seeded Plan' })
  await headroomRow.waitFor()
  result.headroomRow = (await headroomRow.innerText()).replace(/\s+/g, ' ').trim()
  await page.getByLabel('Month').fill(lastMonth)
  await page.getByRole('button', { name: 'Show' }).click()
  await page.waitForURL(new RegExp('/plan\\?month=' + lastMonth + '$'))
  // The table names the month its rows are for: until last month's answer
  // arrives it still shows this month's rows (a race the first version of
  // this test lost once in a while).
  const seatRow = page.locator(`[data-testid="seats"][data-month="${lastMonth}"][aria-busy="false"]`).locator('tbody tr').filter({ hasText: 'Seeded Plan' })
  await seatRow.waitFor()
  result.seatRow = (await seatRow.innerText()).replace(/\s+/g, ' ').trim()
  await shot('07-plan')
  await page.getByTestId('headroom').getByRole('link', { name: 'Seeded Plan' }).click()
  const forecastRow = page.getByTestId('forecast').locator('tbody tr').first()
  await forecastRow.waitFor()
  result.forecastRow = (await forecastRow.innerText()).replace(/\s+/g, ' ').trim()

  // An expired session goes back to login, then to the page asked for.
  const ctl = await fetch(CONTROL + '/expire-sessions', { method: 'POST' })
  assert(ctl.status === 204, 'control server: expire sessions ' + ctl.status)
  await page.goto(ADMIN + '/audit?action=key.revoke')
  await page.waitForURL(/\/login\?next=/)
  result.expiredTo = new URL(page.url()).pathname + new URL(page.url()).search
  await page.getByLabel('Username').fill('admin')
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.waitForURL(/\/audit\?action=key\.revoke$/)
  await page.getByRole('heading', { name: 'Audit log' }).waitFor()
  await page.locator('table.data tbody tr').filter({ hasText: 'key.revoke' }).first().waitFor()
  result.auditRows = await page.locator('table.data tbody tr').count()
  await shot('08-audit')

  // Log out.
  await page.getByRole('button', { name: 'Log out' }).click()
  await page.waitForURL(/\/login$/)

  // A team admin (the Go test made "lead" the admin of the seeded Plan
  // developer's team): the overview sends it to its team's developers, the
  // nav has only what the API lets it reach, and no page calls a route
  // that answers 403.
  const forbidden = []
  const onResponse = (r) => r.status() === 403 && forbidden.push(new URL(r.url()).pathname)
  page.on('response', onResponse)
  await page.getByLabel('Username').fill('lead')
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.waitForURL(/\/developers$/)
  result.teamAdminOverviewTo = new URL(page.url()).pathname
  result.teamAdminNav = await page.getByRole('navigation', { name: 'Main' }).getByRole('link').allInnerTexts()
  const devRows = page.locator('table.data tbody tr')
  await devRows.filter({ hasText: 'Seeded Plan' }).waitFor()
  result.teamAdminDevelopers = (await devRows.locator('td:first-child a').allInnerTexts()).map((s) => s.trim())
  await devRows.filter({ hasText: 'Seeded Plan' }).getByRole('link', { name: 'Seeded Plan' }).click()
  await page.getByRole('heading', { name: 'Seeded Plan' }).waitFor()
  await page.getByRole('heading', { name: 'Usage, last 30 days' }).waitFor()
  await page.waitForLoadState('networkidle')
  await page.getByRole('link', { name: 'Team' }).click()
  await page.locator('table.data tbody tr').filter({ hasText: 'Seeded Team' }).waitFor()
  await page.waitForLoadState('networkidle')
  await shot('09-team-admin')
  page.off('response', onResponse)
  result.teamAdminForbidden = forbidden
  await page.getByRole('button', { name: 'Log out' }).click()
  await page.waitForURL(/\/login$/)

  result.consoleErrors = consoleErrors
  console.log('RESULT ' + JSON.stringify(result))
} catch (e) {
  await shot('failure').catch(() => {})
  console.error(e)
  console.log('RESULT ' + JSON.stringify({ ...result, error: String(e), consoleErrors }))
  process.exitCode = 1
} finally {
  await context.close()
}
