// Logs in through a real browser: headless Chromium (Debian's, driven by
// playwright-core) opens a start URL, fills the IdP's login form
// (inputs `login` and `password`), submits it and waits to be back on the
// start URL's origin; then prints {"url": ..., "text": ...} (the page's
// document.body.innerText) as one JSON line, and writes it to `out` too.
//
//   AUTHCHAIN_BROWSER_JOB='{"url": ..., "username": ..., "password": ...,
//     "chromium": "/usr/bin/chromium", "timeout_ms": 30000, "out": "result.json"}'
//     node browser.mjs
//
// A failure prints {"error": ..., "url": ..., "text": ...} and exits 1.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const job = JSON.parse(process.env.AUTHCHAIN_BROWSER_JOB ?? '{}');
for (const key of ['url', 'username', 'password']) {
  if (typeof job[key] !== 'string') throw new Error(`AUTHCHAIN_BROWSER_JOB: "${key}" is missing`);
}
const timeout = job.timeout_ms ?? 30000;
const origin = new URL(job.url).origin;

function report(result, code) {
  const line = JSON.stringify(result);
  if (job.out) writeFileSync(job.out, line);
  console.log(line);
  process.exitCode = code;
}

const profile = mkdtempSync(join(tmpdir(), 'authchain-chromium-'));
let context;
let page;
try {
  // A fresh profile per run; the browser's own background connections
  // (updates, sync, QUIC probes) are turned off: only loopback is reachable.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: job.chromium ?? '/usr/bin/chromium',
    headless: true,
    timeout,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  context.setDefaultTimeout(timeout);
  page = context.pages()[0] ?? await context.newPage();
  await page.goto(job.url);
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', job.username);
  await page.fill('input[name="password"]', job.password);
  // Back on the app, or the IdP's form again with its error text.
  const back = page.waitForURL((url) => url.origin === origin).then(() => 'back');
  const refused = page.waitForSelector('#error').then(() => 'refused');
  // The loser of the race rejects when the browser closes: not an error.
  back.catch(() => {});
  refused.catch(() => {});
  const outcome = Promise.race([back, refused]);
  await page.click('form [type="submit"]');
  const where = await outcome;
  await page.waitForLoadState('load');
  const result = { url: page.url(), text: await page.evaluate(() => document.body.innerText) };
  if (where === 'back') {
    report(result, 0);
  } else {
    report({ error: 'the IdP refused the login', ...result }, 1);
  }
} catch (err) {
  let url = null;
  let text = null;
  try {
    url = page?.url() ?? null;
    text = page ? await page.evaluate(() => document.body?.innerText ?? '') : null;
  } catch {
    // the page is gone; report what we have
  }
  report({ error: String(err?.message ?? err), url, text }, 1);
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
