// The dashboard (`#/dashboard`): `/metrics` scraped every 2 s; tiles (running, created, ended,
// triggers by state), executions/s over time from the counters' deltas, p50/p99 event → RUNNING
// latency over time from the histogram's bucket deltas, and executions ended by flow and state
// (failures first). The points are kept while the app is open, across page changes.

import { api, clearError, showError } from '../api.js';
import { lineChart } from '../components/chart.js';
import { bucketDelta, buckets, groupBy, parseMetrics, quantile, sum } from '../components/metrics.js';
import { badge, empty, flowHref, fmtNum, fmtSeconds, h, replace } from '../dom.js';

const POINTS = 60;
const INTERVAL = 2000;
const LATENCY = 'swoop_trigger_event_to_running_seconds';

// Kept across visits: the last scrape and the series built from the deltas.
const memory = { last: null, rates: [], latency: [] };

const rate = (v) => (v >= 100 ? fmtNum(v) : fmtNum(v, v >= 10 ? 1 : 2));

export function mountDashboard(el, _params, _query, ctx) {
  const tiles = h('div', { class: 'tiles' });
  const rateChart = h('div', { class: 'card' });
  const latencyChart = h('div', { class: 'card' });
  const byFlow = h('div', { class: 'card' });
  const updated = h('span', { class: 'muted small' });
  replace(el,
    h('div', { class: 'dashboard', testid: 'dashboard' },
      h('div', { class: 'page-head' }, h('h1', null, 'Dashboard'), h('div', { class: 'spacer' }), updated),
      tiles,
      h('div', { class: 'grid-2' }, rateChart, latencyChart),
      byFlow));

  ctx.poll(async () => {
    let text;
    try {
      text = await api.metrics();
    } catch (e) {
      if (ctx.alive) showError(e, 'metrics');
      return;
    }
    if (!ctx.alive) return;
    clearError('metrics');
    const samples = parseMetrics(text);
    const now = Date.now();
    const scrape = {
      t: now,
      created: sum(samples, 'swoop_executions_created_total'),
      ended: sum(samples, 'swoop_executions_ended_total'),
      failed: sum(samples, 'swoop_executions_ended_total', { state: 'FAILED' }),
      buckets: buckets(samples, LATENCY),
    };
    const prev = memory.last;
    // A gap longer than a few intervals (the page was left) starts the deltas again.
    if (prev && now - prev.t < INTERVAL * 5 && scrape.created >= prev.created) {
      const dt = (now - prev.t) / 1000;
      memory.rates.push({
        t: now,
        created: (scrape.created - prev.created) / dt,
        ended: (scrape.ended - prev.ended) / dt,
        failed: (scrape.failed - prev.failed) / dt,
      });
      const delta = bucketDelta(scrape.buckets, prev.buckets);
      memory.latency.push({ t: now, p50: quantile(0.5, delta), p99: quantile(0.99, delta) });
    } else if (prev) {
      memory.rates.push({ t: now, created: null, ended: null, failed: null });
      memory.latency.push({ t: now, p50: null, p99: null });
    }
    memory.last = scrape;
    memory.rates.splice(0, Math.max(0, memory.rates.length - POINTS));
    memory.latency.splice(0, Math.max(0, memory.latency.length - POINTS));
    render(samples, scrape, now);
  }, INTERVAL);

  function render(samples, scrape, now) {
    updated.textContent = `scraped /metrics at ${new Date(now).toLocaleTimeString()} · every 2 s`;
    const running = sum(samples, 'swoop_executions_running');
    const triggerStates = groupBy(samples, 'swoop_trigger_state', ['state']);
    const triggers = [...triggerStates.values()].filter((g) => g.value > 0);
    const p50All = quantile(0.5, scrape.buckets);
    const p99All = quantile(0.99, scrape.buckets);
    const tile = (label, value, sub, testid) => h('div', { class: 'tile', testid }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), sub ? h('div', { class: 'tile-sub' }, sub) : null);
    const lastRate = memory.rates.length ? memory.rates[memory.rates.length - 1].created : null;
    replace(tiles,
      tile('Running now', fmtNum(running), 'executions on this node', 'tile-running'),
      tile('Executions/s', lastRate === null ? '—' : rate(lastRate), `${fmtNum(scrape.created)} created since start`, 'tile-rate'),
      tile('Ended', fmtNum(scrape.ended), h('span', { class: scrape.failed ? 'bad' : '' }, `${fmtNum(scrape.failed)} failed`), 'tile-ended'),
      tile('Event → RUNNING', p50All === null ? '—' : fmtSeconds(p50All), p99All === null ? 'p50 · no realtime event yet' : `p50 · p99 ${fmtSeconds(p99All)}`, 'tile-latency'),
      tile('Triggers', fmtNum(triggers.reduce((s, g) => s + g.value, 0)),
        triggers.length ? triggers.map((g) => h('span', { class: 'tile-chip' }, badge(g.labels.state), ` ${fmtNum(g.value)}`)) : 'none running', 'tile-triggers'));

    // The window grows with the points kept, up to POINTS scrapes.
    const oldest = memory.rates.length ? memory.rates[0].t : now;
    const span = Math.min(POINTS * INTERVAL, Math.max(20000, now - oldest));
    replace(rateChart,
      h('div', { class: 'card-head' }, h('h3', null, 'Executions per second'), h('span', { class: 'muted small' }, 'from the counters, between scrapes')),
      lineChart([
        { name: 'created', color: '#2f6fde', points: memory.rates.map((p) => ({ t: p.t, v: p.created })) },
        { name: 'ended', color: '#2a9d5b', points: memory.rates.map((p) => ({ t: p.t, v: p.ended })) },
        { name: 'failed', color: '#d64545', points: memory.rates.map((p) => ({ t: p.t, v: p.failed })) },
      ], { format: rate, span, testid: 'chart-rate' }));
    replace(latencyChart,
      h('div', { class: 'card-head' }, h('h3', null, 'Event → RUNNING latency'), h('span', { class: 'muted small' }, 'realtime triggers, per interval')),
      lineChart([
        { name: 'p50', color: '#7b4fd6', points: memory.latency.map((p) => ({ t: p.t, v: p.p50 })) },
        { name: 'p99', color: '#e08a1e', points: memory.latency.map((p) => ({ t: p.t, v: p.p99 })) },
      ], { format: fmtSeconds, span, testid: 'chart-latency' }));

    // Executions by flow: created and ended per state, failures first.
    const created = groupBy(samples, 'swoop_executions_created_total', ['namespace', 'flow']);
    const ended = groupBy(samples, 'swoop_executions_ended_total', ['namespace', 'flow', 'state']);
    const flows = new Map();
    const entry = (ns, flow) => {
      const key = `${ns}|${flow}`;
      if (!flows.has(key)) flows.set(key, { ns, flow, created: 0, states: {} });
      return flows.get(key);
    };
    for (const g of created.values()) entry(g.labels.namespace, g.labels.flow).created += g.value;
    for (const g of ended.values()) {
      const f = entry(g.labels.namespace, g.labels.flow);
      f.states[g.labels.state] = (f.states[g.labels.state] || 0) + g.value;
    }
    const rows = [...flows.values()].sort((a, b) => (b.states.FAILED || 0) - (a.states.FAILED || 0) || b.created - a.created);
    const states = ['SUCCESS', 'WARNING', 'FAILED', 'KILLED'];
    const other = (f) => Object.entries(f.states).filter(([s]) => !states.includes(s)).reduce((s, [, v]) => s + v, 0);
    replace(byFlow,
      h('div', { class: 'card-head' }, h('h3', null, 'Failures by flow'), h('span', { class: 'muted small' }, 'executions since the server started')),
      rows.length
        ? h('table', { class: 'table', testid: 'failures-by-flow' },
          h('thead', null, h('tr', null, h('th', null, 'Flow'), h('th', { class: 'num' }, 'Created'), states.map((s) => h('th', { class: 'num' }, badge(s))), h('th', { class: 'num' }, 'Other'), h('th', { class: 'num' }, 'Failure rate'))),
          h('tbody', null, rows.map((f) => {
            const endedN = Object.values(f.states).reduce((s, v) => s + v, 0);
            const failRate = endedN ? (f.states.FAILED || 0) / endedN : 0;
            return h('tr', { testid: 'flow-failures' },
              h('td', null, h('a', { href: flowHref(f.ns, f.flow) }, h('span', { class: 'muted' }, `${f.ns}.`), f.flow)),
              h('td', { class: 'num' }, fmtNum(f.created)),
              states.map((s) => h('td', { class: `num${s === 'FAILED' && f.states.FAILED ? ' bad strong' : ''}` }, f.states[s] ? fmtNum(f.states[s]) : h('span', { class: 'muted' }, '0'))),
              h('td', { class: 'num' }, fmtNum(other(f))),
              h('td', { class: 'num' }, h('div', { class: 'bar small-bar', title: `${(failRate * 100).toFixed(1)}%` }, h('div', { class: 'fill bad-fill', style: { width: `${failRate * 100}%` } })), `${(failRate * 100).toFixed(1)}%`));
          })))
        : empty('No execution since the server started.'));
  }
}
