// The UI's browser test, with playwright-core driving a headless Chromium against a running
// swoop server:
//   SWOOP_URL               the server's base URL (default http://127.0.0.1:8080)
//   SWOOP_CHROMIUM          the browser (default /usr/bin/chromium)
//   SWOOP_SCREENSHOTS       the folder for the PNGs (default ./screenshots)
//   SWOOP_REALTIME_TRIGGER  namespace/flowId/triggerId of a RUNNING trigger to disable and enable
// Steps: a new flow typed in the editor shows its error at its line, then saved once fixed; its
// webhook fires an execution followed live to SUCCESS with its logs and Gantt; the trigger is
// disabled and enabled from the triggers page; the dashboard, executions and topology render.
// Every wait is bounded. On failure: failure.png, the error and the page's console errors, exit 1.

import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.SWOOP_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const SHOTS = resolve(process.env.SWOOP_SCREENSHOTS || 'screenshots');
const [RT_NS, RT_FLOW, RT_TRIGGER] = (process.env.SWOOP_REALTIME_TRIGGER || 'ui.realtime/orders/events').split('/');
const TIMEOUT = 20000;

mkdirSync(SHOTS, { recursive: true });

// Line 5 holds the error: an unknown task type.
const BAD_FLOW = `id: hello
namespace: ui.test
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Nope
    message: "hello {{ trigger.body }}"
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: secretkey123
`;

const GOOD_FLOW = `id: hello
namespace: ui.test
description: Says hello to whatever the webhook receives.
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Log
    message: "hello {{ trigger.body }}"
  - id: pause
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.5S
  - id: result
    type: io.kestra.plugin.core.debug.Return
    format: "n = {{ trigger.body.n }}"
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: secretkey123
`;

const consoleErrors = [];
let step = 'start';
const log = (msg) => console.log(`[browser-test] ${msg}`);
const sel = (id) => `[data-testid="${id}"]`;

async function api(method, path, body, headers = {}) {
  const res = await fetch(BASE + path, { method, body, headers });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/** Replaces the whole editor text, as a person pasting it would. */
async function setEditor(page, text) {
  const content = page.locator(`${sel('editor')} .cm-content`);
  await content.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.insertText(text);
  await page.waitForFunction(
    (expected) => {
      const lines = [...document.querySelectorAll('[data-testid="editor"] .cm-line')].map((l) => l.textContent);
      return lines.join('\n').trimEnd() === expected.trimEnd();
    },
    text,
    { timeout: TIMEOUT },
  );
}

async function waitText(page, selector, text, timeout = TIMEOUT) {
  await page.waitForFunction(
    ([s, t]) => document.querySelector(s)?.textContent.trim() === t,
    [selector, text],
    { timeout },
  );
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.SWOOP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) consoleErrors.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  let triggerDisabled = false;
  try {
    // A fresh start: the flow is created by the test, so it must not exist yet.
    step = 'remove the flow of a previous run';
    const del = await api('DELETE', '/api/v1/flows/ui.test/hello');
    if (![204, 404].includes(del.status)) throw new Error(`DELETE flow: ${del.status} ${JSON.stringify(del.json)}`);

    step = '1. a flow with an error at line 5';
    await page.goto(`${BASE}/#/flows/new`);
    await page.locator(`${sel('editor')} .cm-content`).waitFor();
    await setEditor(page, BAD_FLOW);
    await page.locator(sel('problem'), { hasText: 'line 5' }).first().waitFor();
    await page.locator('.cm-lintRange-error, .cm-lint-marker-error').first().waitFor({ state: 'attached' });
    await page.screenshot({ path: join(SHOTS, 'editor-error.png') });
    log('the problem at line 5 is listed and marked in the editor');

    step = '2. fixed and saved';
    await setEditor(page, GOOD_FLOW);
    await waitText(page, sel('validation-status'), 'Valid');
    if (await page.locator(sel('problem')).count()) throw new Error('problems still listed for the valid flow');
    await page.click(sel('save'));
    await page.locator(sel('saved')).waitFor({ state: 'visible' });
    await page.waitForFunction(() => location.hash.startsWith('#/flows/ui.test/hello'));
    log(`saved: ${(await page.textContent(sel('saved'))).trim()}`);

    step = '3. the webhook';
    const hook = await api('POST', '/api/v1/executions/webhook/ui.test/hello/secretkey123', JSON.stringify({ n: 1 }), { 'content-type': 'application/json' });
    if (hook.status !== 200 || !hook.json?.id) throw new Error(`webhook: ${hook.status} ${JSON.stringify(hook.json)}`);
    const executionId = hook.json.id;
    log(`execution ${executionId}`);

    step = '4. the execution, live';
    await page.goto(`${BASE}/#/executions/${executionId}`);
    await page.locator(sel('execution-state')).waitFor();
    await waitText(page, sel('execution-state'), 'SUCCESS', 30000);
    await page.locator(sel('log-line'), { hasText: 'hello' }).first().waitFor();
    await page.locator(sel('gantt-bar')).first().waitFor();
    await page.locator(sel('task-output')).first().waitFor();
    await page.screenshot({ path: join(SHOTS, 'execution.png'), fullPage: true });
    log('SUCCESS, with its log line and Gantt bars');

    step = '5. disable and enable the realtime trigger';
    await page.goto(`${BASE}/#/triggers`);
    const row = page.locator(`${sel(`trigger-${RT_TRIGGER}`)}[data-namespace="${RT_NS}"][data-flow-id="${RT_FLOW}"]`);
    await row.waitFor();
    const rowState = `${sel(`trigger-${RT_TRIGGER}`)}[data-namespace="${RT_NS}"][data-flow-id="${RT_FLOW}"] ${sel('trigger-state')}`;
    await waitText(page, rowState, 'RUNNING', 30000);
    await row.locator(sel('trigger-disable')).click();
    triggerDisabled = true;
    await waitText(page, rowState, 'DISABLED', 30000);
    const search = await api('GET', `/api/v1/triggers/search?namespace=${encodeURIComponent(RT_NS)}&flowId=${encodeURIComponent(RT_FLOW)}`);
    const status = (search.json?.results || []).find((t) => t.triggerId === RT_TRIGGER && t.namespace === RT_NS && t.flowId === RT_FLOW);
    if (status?.state !== 'DISABLED') throw new Error(`the API says ${status?.state} after disable: ${JSON.stringify(search.json)}`);
    log('DISABLED in the page and in the API');
    await row.locator(sel('trigger-enable')).click();
    await waitText(page, rowState, 'RUNNING', 30000);
    triggerDisabled = false;
    await page.screenshot({ path: join(SHOTS, 'triggers.png'), fullPage: true });
    log('RUNNING again');

    step = '6. dashboard, executions, topology';
    await page.goto(`${BASE}/#/dashboard`);
    await page.locator(sel('dashboard')).waitFor();
    await page.locator(sel('failures-by-flow')).waitFor();
    // Two scrapes make the first rate point (2 s apart); a few more make a line worth a picture.
    await page.waitForFunction(() => document.querySelector('[data-testid="tile-rate"] .tile-value')?.textContent.trim() !== '—', null, { timeout: 15000 });
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-rate"]')?.dataset.points) >= 5, null, { timeout: 25000 });
    await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
    await page.goto(`${BASE}/#/executions`);
    await page.locator(sel('execution-row')).first().waitFor();
    await page.screenshot({ path: join(SHOTS, 'executions.png'), fullPage: true });
    await page.goto(`${BASE}/#/flows/ui.test/hello?tab=topology`);
    await page.locator(`${sel('topology')} svg`).waitFor();
    await page.screenshot({ path: join(SHOTS, 'topology.png'), fullPage: true });
    log('dashboard, executions and topology shown');

    // A failed request shows twice: as the browser's console line and as its HTTP line.
    const pageErrors = consoleErrors.filter((e) => !/favicon|^Failed to load resource/.test(e));
    if (pageErrors.length) throw new Error(`console errors:\n  ${pageErrors.join('\n  ')}`);
    await browser.close();
    console.log('browser test: 6 passed, 0 failed');
    return 0;
  } catch (e) {
    console.error(`[browser-test] FAILED at step "${step}": ${e.stack || e}`);
    try {
      await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true });
      console.error(`[browser-test] screenshot: ${join(SHOTS, 'failure.png')}, page ${page.url()}`);
    } catch (err) {
      console.error(`[browser-test] no screenshot: ${err.message}`);
    }
    if (consoleErrors.length) console.error(`[browser-test] console errors:\n  ${consoleErrors.join('\n  ')}`);
    if (triggerDisabled) {
      // Leave the harness' trigger as it was found.
      await api('POST', `/api/v1/triggers/${encodeURIComponent(RT_NS)}/${encodeURIComponent(RT_FLOW)}/${encodeURIComponent(RT_TRIGGER)}/enable`).catch(() => {});
    }
    await browser.close().catch(() => {});
    return 1;
  }
}

process.exit(await main());
