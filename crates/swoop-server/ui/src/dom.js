// DOM and formatting helpers shared by every page: `h()` to build elements, state badges,
// dates, durations, numbers, and the execution state helpers (terminal states, start/end).

/** Builds an element: h('a', {href, class, onclick, dataset...}, child, [children], 'text'). */
export function h(tag, attrs, ...children) {
  const el = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
      else if (k === 'testid') el.setAttribute('data-testid', v);
      else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected') el[k] = !!v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(['g', 'path', 'rect', 'line', 'polyline', 'circle', 'text', 'title', 'defs', 'marker', 'tspan']);

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const TERMINAL = new Set(['SUCCESS', 'WARNING', 'FAILED', 'KILLED', 'CANCELLED', 'SKIPPED']);

/** A coloured badge for an execution, task or trigger state. */
export function badge(state, attrs = {}) {
  const s = String(state || 'UNKNOWN');
  return h('span', { ...attrs, class: `badge st-${s.toLowerCase()}` }, s);
}

/** An RFC 3339 date as ms since epoch, keeping its sub-millisecond digits. */
export function parseTime(iso) {
  const t = Date.parse(iso);
  const m = /\.(\d+)/.exec(iso || '');
  if (!m || Number.isNaN(t)) return t;
  return t - (((t % 1000) + 1000) % 1000) + Number(`0.${m[1]}`) * 1000;
}

/** Start and end (ms since epoch, end null while running) of a Kestra state object. */
export function span(state) {
  if (!state) return { start: null, end: null };
  const hist = state.histories || [];
  const start = state.startDate ? parseTime(state.startDate) : hist.length ? parseTime(hist[0].date) : null;
  let end = null;
  if (state.endDate) end = parseTime(state.endDate);
  else if (TERMINAL.has(state.current) && hist.length) end = parseTime(hist[hist.length - 1].date);
  return { start, end };
}

/** When the state first became RUNNING (ms), or null. */
export function runningAt(state) {
  const r = (state?.histories || []).find((x) => x.state === 'RUNNING');
  return r ? parseTime(r.date) : null;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `2026-12-07 13:00:38` in local time. */
export function fmtDate(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `13:00:38.874` in local time. */
export function fmtTime(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A duration in ms as `850 ms`, `3.2 s`, `4m 05s`, `2h 03m`. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms <= 0) return '0 ms';
  if (ms < 10) return `${+ms.toFixed(ms < 0.1 ? 2 : 1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

/** Seconds as a latency: `420 µs`, `12.3 ms`, `1.20 s`. */
export function fmtSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return '—';
  if (s < 0.001) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

/** A number with thousands separators, or `—`. */
export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** `io.kestra.plugin.core.log.Log` → `Log`, the full name kept as a title. */
export function shortType(type) {
  const t = String(type || '');
  return h('span', { title: t, class: 'type' }, t.split('.').pop());
}

/** Calls `fn` at most once every `ms` after the last call (trailing edge). */
export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

/** The hash link of a flow. */
export const flowHref = (ns, id) => `#/flows/${encodeURIComponent(ns)}/${encodeURIComponent(id)}`;
/** The hash link of an execution. */
export const executionHref = (id) => `#/executions/${encodeURIComponent(id)}`;

/** An empty-state line for a table or a list. */
export const empty = (text) => h('div', { class: 'empty' }, text);
