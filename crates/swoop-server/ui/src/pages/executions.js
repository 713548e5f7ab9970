// The executions list (`#/executions?namespace=&flowId=&state=&startDate=&endDate=&labels=&triggerId=`):
// the filter form, a page of executions, keyset paging (`next` → `after`), and the first page
// fetched again every 2 s while it is shown.

import { api, clearError, showError } from '../api.js';
import { executionsTable } from '../components/executions-table.js';
import { debounce, empty, fmtNum, h, replace } from '../dom.js';
import { setQuery } from '../router.js';

const STATES = ['CREATED', 'QUEUED', 'RUNNING', 'PAUSED', 'SUCCESS', 'WARNING', 'FAILED', 'KILLING', 'KILLED', 'CANCELLED'];
const FIELDS = ['namespace', 'flowId', 'triggerId', 'labels', 'startDate', 'endDate'];

const pad = (n) => String(n).padStart(2, '0');
/** An RFC 3339 date as a datetime-local input value (local time). */
function toLocalInput(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
/** A datetime-local input value as an RFC 3339 date (UTC). */
function fromLocalInput(v) {
  const t = Date.parse(v);
  return v && !Number.isNaN(t) ? new Date(t).toISOString() : '';
}

export function mountExecutions(el, _params, query, ctx) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f, query.get(f) || '']));
  const states = new Set((query.get('state') || '').split(',').map((s) => s.trim()).filter(Boolean));
  let size = Math.min(200, Math.max(5, Number(query.get('size')) || 25));
  // Keyset paging: the `after` of each page shown so far, the first one null.
  let cursors = [null];
  let pageIndex = 0;
  let lastPage = null;

  const body = h('div', null, empty('Loading…'));
  const info = h('span', { class: 'muted' });
  const pageNo = h('span', { class: 'muted' });
  const live = h('span', { class: 'live', hidden: true, title: 'The first page is fetched again every 2 s' }, '● live');
  const first = h('button', { testid: 'first-page', onclick: () => goto(0) }, '« First page');
  const prev = h('button', { testid: 'prev-page', onclick: () => goto(pageIndex - 1) }, '‹ Previous');
  const next = h('button', { testid: 'next-page', onclick: () => {
    if (!lastPage?.next) return;
    cursors = cursors.slice(0, pageIndex + 1);
    cursors.push(lastPage.next);
    goto(pageIndex + 1);
  } }, 'Next page ›');

  const params = () => ({
    ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)),
    state: [...states].join(','),
    size,
    after: cursors[pageIndex] || undefined,
  });

  let seq = 0;
  async function load() {
    const mine = ++seq;
    try {
      const page = await api.searchExecutions(params());
      if (!ctx.alive || mine !== seq) return;
      clearError('executions');
      lastPage = page;
      render(page);
    } catch (e) {
      if (mine !== seq) return;
      showError(e, 'executions');
      replace(body, empty('Cannot load the executions.'));
    }
  }

  function render(page) {
    const results = page.results || [];
    replace(body, results.length ? executionsTable(results) : empty(pageIndex ? 'No more executions.' : 'No execution matches.'));
    const total = page.total ?? 0;
    const from = pageIndex * size + (results.length ? 1 : 0);
    info.textContent = `${fmtNum(from)}–${fmtNum(pageIndex * size + results.length)} of ${page.totalIsLowerBound ? 'at least ' : ''}${fmtNum(total)}`;
    first.disabled = pageIndex === 0;
    prev.disabled = pageIndex === 0;
    next.disabled = !page.next;
    live.hidden = pageIndex !== 0;
    pageNo.textContent = `page ${pageIndex + 1}`;
  }

  const poller = ctx.poll(async () => {
    if (pageIndex === 0) await load();
  }, 2000);

  function goto(i) {
    pageIndex = Math.max(0, i);
    if (pageIndex === 0) poller.now();
    else load();
  }

  function apply() {
    setQuery({ ...filters, state: [...states].join(','), size: size === 25 ? '' : size });
    cursors = [null];
    goto(0);
  }
  const applySoon = debounce(apply, 350);
  ctx.onCleanup(applySoon.cancel);

  const text = (field, placeholder, attrs = {}) => {
    const input = h('input', { type: 'search', placeholder, value: filters[field], testid: `filter-${field}`, ...attrs });
    input.addEventListener('input', () => {
      filters[field] = input.value.trim();
      applySoon();
    });
    return input;
  };
  const date = (field, label) => {
    const input = h('input', { type: 'datetime-local', value: toLocalInput(filters[field]), testid: `filter-${field}` });
    input.addEventListener('change', () => {
      filters[field] = fromLocalInput(input.value);
      apply();
    });
    return h('label', { class: 'inline' }, label, input);
  };
  const stateChips = STATES.map((s) => {
    const chip = h('button', { class: `chip toggle st-${s.toLowerCase()}${states.has(s) ? ' on' : ''}`, 'data-state': s, testid: `filter-state-${s}` }, s);
    chip.addEventListener('click', () => {
      if (states.has(s)) states.delete(s);
      else states.add(s);
      chip.classList.toggle('on', states.has(s));
      apply();
    });
    return chip;
  });
  const sizeSelect = h('select', { testid: 'filter-size' }, [10, 25, 50, 100, 200].map((n) => h('option', { value: n, selected: n === size }, `${n} / page`)));
  sizeSelect.addEventListener('change', () => {
    size = Number(sizeSelect.value);
    apply();
  });
  const reset = h('button', { class: 'link', onclick: () => {
    location.hash = '#/executions';
  } }, 'Clear filters');

  replace(el,
    h('div', { class: 'page-head' }, h('h1', null, 'Executions'), live, h('div', { class: 'spacer' }), info),
    h('div', { class: 'filter-form card', testid: 'executions-filters' },
      h('div', { class: 'filters' },
        text('namespace', 'Namespace'),
        text('flowId', 'Flow id'),
        text('triggerId', 'Trigger id'),
        text('labels', 'Labels key:value,…', { title: 'key:value, several comma-separated: all must match' }),
        date('startDate', 'From'),
        date('endDate', 'Before'),
        sizeSelect,
        reset),
      h('div', { class: 'chips' }, h('span', { class: 'muted small' }, 'State:'), stateChips)),
    h('div', { class: 'card' }, body),
    h('div', { class: 'pager' }, first, prev, pageNo, next));
}
