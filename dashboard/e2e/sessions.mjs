// The browser test of the session and prompt-cache pages, driven by
// TestSessionTree (test/e2e/sessions_test.go) after real Claude Code ran a
// task with a subagent through `ccproxy dev` and a conversation with a
// cache break at turn 5 was seeded. Every step asserts what a person would
// see; the result is one JSON line at the end ("RESULT {…}").
//
// Environment: ADMIN (the admin URL), PASSWORD (of the admin "admin"),
// USER_ID (the developer), SESSION (the Claude Code session), AGENT (its
// subagent's id), CONV (the seeded session), ARTIFACTS (screenshot
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
const PASSWORD = env('PASSWORD')
const USER_ID = env('USER_ID')
const SESSION = env('SESSION')
const AGENT = env('AGENT')
const CONV = env('CONV')
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
})
const page = context.pages()[0] ?? (await context.newPage())
page.setDefaultTimeout(30_000)
page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && result.consoleErrors.push(m.text()))
page.on('pageerror', (e) => result.consoleErrors.push(String(e)))
const shot = async (name) => {
  await page.screenshot({ path: join(ARTIFACTS, name + '.png'), fullPage: true })
  log('screenshot ' + name)
}
// The exact amount a Money shows on hover.
const exact = async (locator) => (await locator.locator('.num').first().getAttribute('title')) ?? ''

try {
  log('login')
  await page.goto(ADMIN + '/developers/' + USER_ID)
  await page.waitForURL(/\/login\?next=/)
  await page.getByLabel('Username').fill('admin')
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Log in' }).click()

  // The developer's sessions, most expensive first: the seeded
  // conversation (six long turns) before the Claude Code session (0.151
  // USD); most recent first, the other way round.
  const sessions = page.getByRole('table', { name: /Sessions of/ })
  await sessions.locator('tbody tr').nth(1).waitFor()
  assert((await page.getByRole('button', { name: 'Most expensive' }).getAttribute('aria-pressed')) === 'true', 'sessions sorted by cost by default')
  const firstTitle = async () => sessions.locator('tbody tr').first().getAttribute('title')
  assert((await firstTitle()) === CONV, `the most expensive session is ${CONV}, not ${await firstTitle()}`)
  const ours = sessions.locator(`tbody tr[title="${SESSION}"]`)
  assert((await ours.locator('td').nth(2).innerText()).trim() === '2', 'the Claude Code session has 2 agents')
  assert((await exact(ours.locator('td').nth(5))) === '$0.151000', 'its cost is $0.151000, not ' + (await exact(ours.locator('td').nth(5))))
  await shot('sessions-01-developer')
  await page.getByRole('button', { name: 'Most recent' }).click()
  for (let i = 0; (await firstTitle()) !== SESSION; i++) {
    assert(i < 100, `the most recent session is ${SESSION}, not ${await firstTitle()}`)
    await page.waitForTimeout(100)
  }
  await sessions.locator('tbody tr').first().locator('a').click()

  // The tree: the main agent, then the subagent indented under it, each
  // with its own cost.
  await page.getByRole('heading', { name: /Session/ }).waitFor()
  const tree = page.getByTestId('agent-tree')
  await tree.locator('tbody tr').nth(1).waitFor()
  const rows = tree.locator('tbody tr')
  assert((await rows.count()) === 2, 'two agents in the tree, not ' + (await rows.count()))
  assert((await rows.nth(0).getAttribute('data-agent')) === 'main', 'the main agent first')
  assert((await rows.nth(1).getAttribute('data-agent')) === AGENT, 'the subagent second')
  assert((await rows.nth(1).locator('td').nth(1).innerText()).includes('inferred from an Agent call'), 'the subagent parent is inferred')
  const mainCost = await exact(rows.nth(0).getByTestId('own-cost'))
  const subCost = await exact(rows.nth(1).getByTestId('own-cost'))
  assert(mainCost === '$0.124100' && subCost === '$0.026900', `own costs ${mainCost} and ${subCost}`)
  assert((await exact(page.getByTestId('sd-cost'))) === '$0.151000', 'the session costs $0.151000')
  assert((await page.getByTestId('tree-source').innerText()).includes('Parents inferred'), 'the page says the tree was inferred')
  await shot('sessions-02-tree')

  // The seeded conversation: a cache break at turn 5, wasting $0.1128.
  await page.goto(ADMIN + '/developers/' + USER_ID + '/sessions/' + encodeURIComponent(CONV))
  const breaks = page.getByTestId('cache-breaks-table')
  await breaks.locator('tbody tr').first().waitFor()
  assert((await breaks.locator('tbody tr').count()) === 1, 'one cache break')
  assert((await breaks.getByTestId('break-turn').innerText()).trim() === '5', 'the break is at turn 5')
  assert((await exact(breaks.getByTestId('break-wasted'))) === '$0.112800', 'it wasted $0.112800')
  assert((await page.getByTestId('cache-hit').innerText()).includes('%'), 'a hit rate is shown')
  await shot('sessions-03-cache-break')

  // The prompt-cache page lists it among the most wasteful breaks.
  await page.getByRole('link', { name: 'Prompt cache' }).click()
  await page.getByRole('heading', { name: 'Prompt cache' }).waitFor()
  const worst = page.getByTestId('cache-breaks-table')
  await worst.locator('tbody tr').first().waitFor()
  assert((await exact(worst.locator('tbody tr').first().getByTestId('break-wasted'))) === '$0.112800', 'the prompt-cache page lists the $0.112800 break first')
  assert((await worst.locator('tbody tr').first().getByTestId('break-turn').innerText()).trim() === '5', 'at turn 5')
  await page.getByTestId('cache-groups').waitFor()
  await page.getByRole('button', { name: 'Model' }).click()
  await page.getByTestId('cache-groups').getByRole('cell', { name: 'claude-opus-5-5' }).waitFor()
  await shot('sessions-04-prompt-cache')

  // From the developer's page, the same page narrowed to the developer,
  // by session: the two sessions, the seeded one with its break.
  await page.goto(ADMIN + '/developers/' + USER_ID)
  await page.getByRole('link', { name: /^Prompt-cache economics of/ }).click()
  await page.getByRole('heading', { name: /Prompt cache · / }).getByRole('link').waitFor()
  const bySession = page.getByTestId('cache-groups')
  await bySession.locator('tbody tr').nth(1).waitFor()
  assert((await bySession.locator('tbody tr').count()) === 2, 'two sessions of the developer')
  const conv = bySession.locator('tbody tr').filter({ hasText: CONV })
  assert((await conv.locator('td').nth(7).innerText()).trim() === '1', 'the seeded session has one break')
  await shot('sessions-05-developer-cache')
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e)
  await shot('sessions-failure').catch(() => {})
} finally {
  await context.close()
  console.log('RESULT ' + JSON.stringify(result))
}
