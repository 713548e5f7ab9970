// The live triggers table, shared by the triggers page and a flow's Triggers tab: polls
// `GET /api/v1/triggers/search` every second and updates one row per trigger in place (state,
// events, executions/s over the last seconds, in flight vs maxInFlight, lag, last error and
// reconnect attempt) with its disable / enable / restart buttons.

import { api, clearError, showError } from '../api.js';
import { badge, empty, flowHref, fmtDuration, fmtNum, h, replace, shortType } from '../dom.js';

const WINDOW_MS = 5000;

function sinceText(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : `for ${fmtDuration(Math.max(0, Date.now() - t))}`;
}

/**
 * The panel, polling while `ctx` lives. Options: `namespace`, `flowId` (filters), `declared`
 * (the flow's own triggers, to list those without a live status), `showFlow` (a flow column).
 */
export function triggerPanel(ctx, { namespace, flowId, declared, showFlow = true } = {}) {
  const rows = new Map();
  const tbody = h('tbody');
  const table = h('table', { class: 'table triggers', testid: 'triggers-table' },
    h('thead', null, h('tr', null,
      [showFlow ? 'Flow' : null, 'Trigger', 'State', 'Events in', 'Executions/s', 'In flight', 'Lag', 'Last error', ''].filter((c) => c !== null).map((c) => h('th', null, c)))),
    tbody);
  const note = h('div');
  const others = h('div');
  const updated = h('span', { class: 'muted small' });
  const el = h('div', { class: 'trigger-panel' }, note, table, others, h('div', { class: 'panel-foot' }, updated));
  let loadedOnce = false;

  const poll = ctx.poll(async () => {
    let data;
    try {
      data = await api.searchTriggers({ namespace, flowId });
    } catch (e) {
      if (ctx.alive) showError(e, 'triggers');
      return;
    }
    if (!ctx.alive) return;
    clearError('triggers');
    const now = performance.now();
    let results = data.results || [];
    if (namespace && flowId) results = results.filter((t) => t.namespace === namespace && t.flowId === flowId);
    results.sort((a, b) => `${a.namespace}/${a.flowId}/${a.triggerId}`.localeCompare(`${b.namespace}/${b.flowId}/${b.triggerId}`));
    const seen = new Set();
    for (const t of results) {
      const key = `${t.namespace}/${t.flowId}/${t.triggerId}`;
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = makeRow(t);
        rows.set(key, row);
      }
      row.update(t, now);
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.tr.remove();
        rows.delete(key);
      }
    }
    // Re-append only when the order changed: moving a row under the pointer would lose a click.
    const wanted = results.map((t) => rows.get(`${t.namespace}/${t.flowId}/${t.triggerId}`).tr);
    const order = [...tbody.children];
    if (wanted.length !== order.length || wanted.some((tr, i) => tr !== order[i])) wanted.forEach((tr) => tbody.appendChild(tr));
    table.hidden = !results.length;
    replace(note, results.length ? null : empty(namespace || flowId ? 'No realtime or schedule trigger of this flow runs here.' : 'No trigger runs here: realtime and schedule triggers of the flows show up here.'));
    if (declared && !loadedOnce) renderOthers(results);
    loadedOnce = true;
    updated.textContent = `${results.length} trigger${results.length === 1 ? '' : 's'} · updated ${new Date().toLocaleTimeString()}`;
  }, 1000);

  function renderOthers(results) {
    const live = new Set(results.map((t) => t.triggerId));
    const rest = (declared || []).filter((t) => !live.has(t.id));
    if (!rest.length) return;
    replace(others, h('div', { class: 'others' },
      h('h3', null, 'Other triggers of this flow'),
      h('ul', { class: 'plain' }, rest.map((t) => h('li', null,
        h('strong', null, t.id), ' ', shortType(t.type), ' ',
        /Webhook$/.test(t.type || '')
          ? h('code', null, `POST /api/v1/executions/webhook/${namespace}/${flowId}/${t.key ?? '{key}'}`)
          : h('span', { class: 'muted' }, 'no live status'))))));
  }

  function makeRow(t) {
    const cells = {
      state: h('td'),
      events: h('td', { class: 'num' }),
      rate: h('td', { class: 'num' }),
      flight: h('td'),
      lag: h('td', { class: 'num' }),
      error: h('td', { class: 'error-cell' }),
    };
    const samples = [];
    const act = (action) => async (ev) => {
      const btn = ev.currentTarget;
      btn.disabled = true;
      busy = true;
      try {
        await api.triggerAction(t.namespace, t.flowId, t.triggerId, action);
        clearError('trigger-action');
      } catch (e) {
        showError(e, 'trigger-action');
      } finally {
        busy = false;
        poll.now();
      }
    };
    let busy = false;
    const buttons = {
      disable: h('button', { class: 'small', testid: 'trigger-disable', onclick: act('disable'), title: 'Stop it, durably, on every node' }, 'Disable'),
      enable: h('button', { class: 'small', testid: 'trigger-enable', onclick: act('enable'), title: 'Start it again' }, 'Enable'),
      restart: h('button', { class: 'small', testid: 'trigger-restart', onclick: act('restart'), title: 'Stop and start it: a realtime source reconnects' }, 'Restart'),
    };
    const tr = h('tr', { testid: `trigger-${t.triggerId}`, 'data-namespace': t.namespace, 'data-flow-id': t.flowId, 'data-trigger-id': t.triggerId },
      showFlow ? h('td', null, h('a', { href: flowHref(t.namespace, t.flowId) }, h('span', { class: 'muted' }, `${t.namespace}.`), t.flowId)) : null,
      h('td', null, h('strong', null, t.triggerId), h('div', null, shortType(t.type))),
      cells.state, cells.events, cells.rate, cells.flight, cells.lag, cells.error,
      h('td', { class: 'actions' }, buttons.disable, buttons.enable, buttons.restart));
    return {
      tr,
      update(s, now) {
        // A restarted trigger counts from 0 again: start the window over.
        if (samples.length && (s.executionsCreated || 0) < samples[samples.length - 1].created) samples.length = 0;
        samples.push({ now, created: s.executionsCreated || 0 });
        while (samples.length > 2 && now - samples[1].now >= WINDOW_MS) samples.shift();
        const first = samples[0];
        const dt = (now - first.now) / 1000;
        const rate = dt > 0.5 ? Math.max(0, (s.executionsCreated - first.created) / dt) : null;
        replace(cells.state, badge(s.state, { testid: 'trigger-state' }), h('div', { class: 'muted small' }, sinceText(s.since)));
        replace(cells.events, fmtNum(s.events),
          s.duplicates ? h('div', { class: 'muted small', title: 'Events seen again and skipped' }, `${fmtNum(s.duplicates)} dup`) : null,
          s.rejected ? h('div', { class: 'bad small', title: 'Events that could never run (kept as FAILED executions)' }, `${fmtNum(s.rejected)} rejected`) : null);
        replace(cells.rate, rate === null ? '—' : fmtNum(rate, rate < 10 ? 1 : 0),
          h('div', { class: 'muted small' }, `${fmtNum(s.executionsCreated)} total`));
        if (s.maxInFlight) {
          const pct = Math.min(100, (100 * (s.inFlight || 0)) / s.maxInFlight);
          replace(cells.flight,
            h('div', { class: 'bar', title: `${s.inFlight} of at most ${s.maxInFlight} in flight` },
              h('div', { class: `fill${pct >= 90 ? ' hot' : ''}`, style: { width: `${pct}%` } })),
            h('div', { class: 'small' }, `${fmtNum(s.inFlight)} / ${fmtNum(s.maxInFlight)}`));
        } else {
          replace(cells.flight, h('span', { class: 'muted' }, s.inFlight ? fmtNum(s.inFlight) : '—'));
        }
        cells.lag.textContent = s.lag === null || s.lag === undefined ? '—' : fmtNum(s.lag);
        replace(cells.error,
          s.lastError ? h('div', { class: 'err ellipsis', title: s.lastError }, s.lastError) : h('span', { class: 'muted' }, '—'),
          s.attempt ? h('div', { class: 'small warn-text' }, `reconnect attempt ${s.attempt}`) : null);
        if (!busy) {
          const disabled = s.state === 'DISABLED';
          buttons.disable.disabled = disabled;
          buttons.enable.disabled = !disabled;
          buttons.restart.disabled = disabled;
        }
      },
    };
  }

  return el;
}
