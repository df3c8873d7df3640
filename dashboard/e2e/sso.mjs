// The single sign-on browser test, driven by test/e2e/sso_browser_test.go:
// it starts an OpenID provider (internal/oidctest) and `ccproxy dev`
// configured for it, and runs this script with Debian's chromium through
// playwright-core. What the pages showed is printed as one JSON line at
// the end ("RESULT {…}") for the Go test to check.
//
// Environment: ADMIN (the admin URL), ISSUER (the provider's URL),
// PASSWORD (of the first owner "admin"), ARTIFACTS (screenshot
// directory), CHROMIUM (executable).
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
const ISSUER = env('ISSUER')
const PASSWORD = env('PASSWORD')
const ARTIFACTS = env('ARTIFACTS')
mkdirSync(ARTIFACTS, { recursive: true })

const result = {}
const started = Date.now()
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`)

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'ccproxy-chromium-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
  timezoneId: 'UTC',
  locale: 'en-US',
})
const page = context.pages()[0] ?? (await context.newPage())
page.setDefaultTimeout(30_000)
const consoleErrors = []
// Expected failures (the 403 of the viewer's write, the 401 of the session
// check before login) are logged by the browser as resource errors.
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && consoleErrors.push(m.text()))
page.on('pageerror', (e) => consoleErrors.push(String(e)))

const shot = async (name) => {
  await page.screenshot({ path: join(ARTIFACTS, name + '.png'), fullPage: true })
  log('screenshot ' + name)
}
const navLinks = async () => (await page.locator('nav[aria-label="Main"] a').allInnerTexts()).map((s) => s.trim())

// Signs in at the provider's own login page, from the dashboard's button.
async function signInWithSSO(user, password) {
  await page.goto(ADMIN + '/login')
  await page.getByRole('link', { name: 'Sign in with SSO' }).click()
  await page.waitForURL((u) => u.toString().startsWith(ISSUER + '/login/'))
  await page.locator('#username').fill(user)
  await page.locator('#password').fill(password)
  await page.getByRole('button', { name: 'Login' }).click()
}

async function logOut() {
  await page.getByRole('button', { name: 'Log out' }).click()
  await page.waitForURL(/\/login/)
}

try {
  log('open')
  await page.goto(ADMIN + '/')
  await page.waitForURL(/\/login/)
  await page.getByRole('link', { name: 'Sign in with SSO' }).waitFor()
  await shot('sso-01-login')

  // A member of the viewers group.
  await signInWithSSO('vera', "vera's long password")
  await page.getByRole('heading', { name: 'Overview' }).waitFor()
  result.viewerWho = (await page.locator('.who').innerText()).trim()
  result.viewerNav = await navLinks()
  await shot('sso-02-viewer-overview')
  // A viewer's pages have no write controls; a write sent anyway (with the
  // session cookie and the CSRF token, as the page would) is refused.
  await page.getByRole('link', { name: 'Developers' }).click()
  await page.getByRole('heading', { name: 'Developers' }).waitFor()
  result.viewerWriteButtons = await page.getByRole('button', { name: 'New developer' }).count()
  await page.getByRole('link', { name: 'Models & prices' }).click()
  await page.getByRole('heading', { name: 'Model mappings' }).waitFor()
  result.viewerWriteButtons += await page.getByRole('button', { name: /New mapping|New price|Edit|Delete/ }).count()
  result.viewerWrite = await page.evaluate(async () => {
    const csrf = decodeURIComponent(document.cookie.match(/(?:^|;\s*)ccproxy_csrf=([^;]+)/)[1])
    const r = await fetch('/api/v1/users', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: JSON.stringify({ name: 'Not Allowed' }) })
    return r.status + ' ' + (await r.json()).detail
  })
  await shot('sso-03-viewer-models')
  await logOut()

  // The first owner, with its password: the Admins page.
  await page.getByLabel('Username').fill('admin')
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('heading', { name: 'Overview' }).waitFor()
  result.ownerNav = await navLinks()
  await page.getByRole('link', { name: 'Admins' }).click()
  await page.getByRole('heading', { name: 'Admins' }).waitFor()
  await page.getByRole('button', { name: 'New admin' }).click()
  const na = page.getByRole('dialog', { name: 'New admin' })
  await na.getByLabel('Username').fill('auditor')
  await na.getByLabel(/Password/).fill('an auditor password')
  await na.getByLabel('Role').selectOption('viewer')
  await na.getByRole('button', { name: 'Create' }).click()
  await page.locator('table.data tbody tr', { hasText: 'auditor' }).waitFor()
  const changed = page.waitForResponse((r) => /\/api\/v1\/admins\/[0-9a-f-]+$/.test(r.url()) && r.request().method() === 'PATCH')
  await page.getByLabel('Role of vera@example.com').selectOption('admin')
  const resp = await changed
  if (resp.status() !== 200) throw new Error('role change answered ' + resp.status())
  // The page shows the changed role (a wait, not a sleep: it fails after
  // the timeout if the page never does).
  await page
    .waitForFunction(() => document.querySelector('select[aria-label="Role of vera@example.com"]')?.value === 'admin', null, { timeout: 10_000 })
    .catch(() => {})
  await page.waitForFunction(() => !document.querySelector('table.data[aria-busy="true"]'))
  result.roleChanged = await page.getByLabel('Role of vera@example.com').inputValue()
  result.adminsRows = await page.locator('table.data tbody tr').evaluateAll((rows) =>
    rows.map((tr) =>
      [...tr.querySelectorAll('td')]
        .map((td) => (td.querySelector('select') ? td.querySelector('select').value : td.innerText.trim()))
        .join(' ')
        .trim(),
    ),
  )
  await shot('sso-04-admins-page')
  await logOut()

  // Someone whose groups map to no role: back to the login page.
  await signInWithSSO('nick', "nick's long password")
  await page.waitForURL(/\/login\?sso_error=/)
  result.refusalURL = new URL(page.url()).pathname + new URL(page.url()).search
  result.refusal = (await page.locator('#login-error').innerText()).trim()
  await shot('sso-05-refused')
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e)
  await shot('sso-failure').catch(() => {})
} finally {
  result.consoleErrors = consoleErrors
  await context.close()
  console.log('RESULT ' + JSON.stringify(result))
}
