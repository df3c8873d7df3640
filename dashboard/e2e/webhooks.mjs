// The browser test of the Webhooks and Exports pages, driven by
// TestWebhooksAndExportsInBrowser (test/e2e/webhooks_browser_test.go)
// against `ccproxy dev` with a webhook receiver on loopback. Every step
// asserts what a person would see; the result is one JSON line at the end
// ("RESULT {…}"), which the Go test checks against the receiver and the
// export columns.
//
// Environment: ADMIN (the admin URL), PASSWORD (of the owner "admin" and of
// the viewer), VIEWER (a viewer's username), RECEIVER (the webhook URL),
// DEVELOPER (a developer's name), ARTIFACTS (screenshot directory),
// CHROMIUM (executable).
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (k) => {
  const v = process.env[k]
  if (!v) throw new Error(`${k} is not set`)
  return v
}
const ADMIN = env('ADMIN')
const PASSWORD = env('PASSWORD')
const VIEWER = env('VIEWER')
const RECEIVER = env('RECEIVER')
const DEVELOPER = env('DEVELOPER')
const ARTIFACTS = env('ARTIFACTS')
mkdirSync(ARTIFACTS, { recursive: true })

const result = { consoleErrors: [] }
const started = Date.now()
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`)
function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg)
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'ccproxy-chromium-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
  timezoneId: 'UTC',
  locale: 'en-US',
  acceptDownloads: true,
})
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ADMIN })
const page = context.pages()[0] ?? (await context.newPage())
page.setDefaultTimeout(15_000)
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && result.consoleErrors.push(m.text()))
page.on('pageerror', (e) => result.consoleErrors.push(String(e)))
const shot = async (name) => {
  await page.screenshot({ path: join(ARTIFACTS, name + '.png'), fullPage: true })
  log('screenshot ' + name)
}
const login = async (user) => {
  await page.getByLabel('Username').fill(user)
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()
}
// The first line of a download started by clicking locator.
const downloadHeader = async (locator) => {
  const [download] = await Promise.all([page.waitForEvent('download'), locator.click()])
  const path = await download.path()
  assert(path, 'the download finished: ' + (await download.failure()))
  return { name: download.suggestedFilename(), header: readFileSync(path, 'utf8').split('\r\n')[0] }
}

try {
  log('login')
  await page.goto(ADMIN + '/webhooks')
  await page.waitForURL(/\/login\?next=/)
  await login('admin')
  await page.getByRole('heading', { name: 'Webhooks' }).waitFor()
  await page.getByText('No webhooks yet.').waitFor()

  // Create: only two event types; the secret is generated.
  await page.getByRole('button', { name: 'New webhook' }).click()
  const form = page.getByRole('dialog', { name: 'New webhook' })
  await form.getByLabel('Name').fill('ops-browser')
  await form.getByLabel('URL (http or https)').fill(RECEIVER)
  await form.getByLabel('key.revoked').check()
  await form.getByLabel('webhook.test').check()
  await form.getByRole('button', { name: 'Create' }).click()

  // The secret, once, with a copy button.
  const shown = page.getByRole('dialog', { name: 'Webhook created' })
  const secret = await shown.getByTestId('webhook-secret').inputValue()
  assert(/^whsec_\S{16,}$/.test(secret), 'a generated whsec_ secret, not ' + secret)
  result.secret = secret
  await shown.getByRole('button', { name: 'Copy secret' }).click()
  await shown.getByText('Copied the secret.').waitFor()
  assert((await page.evaluate(() => navigator.clipboard.readText())) === secret, 'the clipboard holds the secret')
  await shot('webhooks-01-secret')
  await shown.getByRole('button', { name: 'Done' }).click()

  // The list: the host only, the filter, enabled, nothing delivered yet;
  // the secret is nowhere on the page, nor after a reload, nor in Edit.
  const row = page.getByTestId('webhook-ops-browser')
  await row.waitFor()
  const cells = async () => (await row.locator('td').allInnerTexts()).slice(0, 6).map((s) => s.trim())
  const host = new URL(RECEIVER).host
  for (let i = 0; ; i++) {
    const c = await cells()
    if (c[5] === 'none yet') {
      assert(c.slice(0, 5).join('|') === `ops-browser|${host}|generic|key.revoked, webhook.test|Enabled`, 'the row: ' + c.join('|'))
      break
    }
    assert(i < 50, 'last delivery: ' + c[5])
    await page.waitForTimeout(100)
  }
  assert(!(await page.content()).includes(secret), 'the secret is gone from the page')
  await page.reload()
  await row.waitFor()
  assert(!(await page.content()).includes(secret), 'the secret is not on the reloaded page')
  await row.getByRole('button', { name: 'Edit ops-browser' }).click()
  const edit = page.getByRole('dialog', { name: 'Edit webhook' })
  assert((await edit.getByLabel('URL (http or https)').inputValue()) === RECEIVER, 'Edit shows the URL')
  assert((await edit.getByLabel(/New signing secret/).inputValue()) === '', 'Edit does not show the secret')
  await edit.getByRole('button', { name: 'Cancel' }).click()

  // Send a test event: the log opens and shows it delivered.
  log('test event')
  await row.getByRole('button', { name: 'Send test event to ops-browser' }).click()
  const notice = await page.getByText(/^Test event \S+ queued for ops-browser\.$/).innerText()
  result.eventID = notice.split(' ')[2]
  await page.getByRole('heading', { name: 'Deliveries of ops-browser' }).waitFor()
  const delivered = page.getByTestId('deliveries').locator(`tr[data-event="${result.eventID}"][data-status="delivered"]`)
  await delivered.waitFor()
  const d = (await delivered.locator('td').allInnerTexts()).map((s) => s.trim())
  result.deliveryRow = [d[2], d[3], d[4]].join('|')
  assert(d[1] === result.eventID && d[5] === '—' && d[6] === '—', 'the delivery row: ' + d.join('|'))
  await row.getByTestId('last-delivery').getByText('delivered (204)').waitFor()
  assert((await page.getByTestId('deliveries').getAttribute('aria-busy')) !== null, 'the log has aria-busy')
  await shot('webhooks-02-delivered')

  // At 1024 px the nav wraps and nothing scrolls sideways.
  await page.setViewportSize({ width: 1024, height: 800 })
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
  assert(overflow === 0, `${overflow} px horizontal overflow at 1024 px`)
  await shot('webhooks-02b-1024')
  await page.setViewportSize({ width: 1280, height: 900 })

  // Disable, then enable again.
  await row.getByRole('button', { name: 'Disable ops-browser' }).click()
  await row.getByText('Disabled', { exact: true }).waitFor()
  await row.getByRole('button', { name: 'Enable ops-browser' }).click()
  await row.getByText('Enabled', { exact: true }).waitFor()

  // Exports: both granularities download, the per-request one of one
  // developer.
  log('exports')
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Exports' }).click()
  await page.getByRole('heading', { name: 'Usage exports' }).waitFor()
  const link = page.getByRole('link', { name: 'Download CSV' })
  const daily = await downloadHeader(link)
  assert(daily.name === 'ccproxy-usage-daily.csv', 'daily file name ' + daily.name)
  result.dailyCSV = daily.header
  await page.getByRole('radio', { name: /Per request/ }).check()
  await page.getByRole('combobox', { name: /^Developer/ }).selectOption({ label: DEVELOPER })
  // The link follows the form once the URL has changed.
  await page.locator('a[data-testid=export-link][href*="/requests?"][href*="user_id="]').waitFor()
  result.requestsURL = await link.getAttribute('href')
  const requests = await downloadHeader(link)
  assert(requests.name === 'ccproxy-usage-requests.csv', 'per-request file name ' + requests.name)
  result.requestsCSV = requests.header
  assert(new URL(page.url()).searchParams.get('rows') === 'requests', 'the granularity is in the URL')
  await shot('exports-01')

  // A viewer: no Webhooks link, no page; Exports is there.
  log('viewer')
  await page.getByRole('button', { name: 'Log out' }).click()
  await page.waitForURL(/\/login/)
  await login(VIEWER)
  const nav = page.getByRole('navigation', { name: 'Main' })
  await nav.getByRole('link', { name: 'Exports' }).waitFor()
  assert((await nav.getByRole('link', { name: 'Webhooks' }).count()) === 0, 'no Webhooks link for a viewer')
  await page.goto(ADMIN + '/webhooks')
  await page.getByText('No such page.').waitFor()
  await shot('webhooks-03-viewer')
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e)
  await shot('webhooks-failure').catch(() => {})
} finally {
  await context.close()
  console.log('RESULT ' + JSON.stringify(result))
}
