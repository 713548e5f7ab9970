// The flows list (`#/flows?namespace=&q=&page=`): namespace filter, text search, a page of
// flows with their triggers and task counts, and the "New flow" button.

import { api, clearError, showError } from '../api.js';
import { debounce, empty, flowHref, h, replace, shortType } from '../dom.js';
import { setQuery } from '../router.js';

const SIZE = 25;

export function mountFlows(el, _params, query, ctx) {
  const state = {
    namespace: query.get('namespace') || '',
    q: query.get('q') || '',
    page: Math.max(1, Number(query.get('page')) || 1),
  };
  const nsInput = h('input', { type: 'search', placeholder: 'Namespace', title: 'A namespace and its children', value: state.namespace, testid: 'flows-namespace' });
  const qInput = h('input', { type: 'search', placeholder: 'Search id or namespace', value: state.q, testid: 'flows-search' });
  const body = h('div', { class: 'card' }, empty('Loading…'));
  const pager = h('div', { class: 'pager' });

  const load = async () => {
    setQuery({ namespace: state.namespace, q: state.q, page: state.page > 1 ? state.page : '' });
    try {
      const data = await api.searchFlows({ namespace: state.namespace, q: state.q, page: state.page, size: SIZE });
      if (!ctx.alive) return;
      clearError('flows');
      renderTable(data);
    } catch (e) {
      showError(e, 'flows');
      replace(body, empty('Cannot load the flows.'));
    }
  };
  const reload = debounce(() => {
    state.page = 1;
    load();
  }, 250);
  nsInput.addEventListener('input', () => {
    state.namespace = nsInput.value.trim();
    reload();
  });
  qInput.addEventListener('input', () => {
    state.q = qInput.value.trim();
    reload();
  });
  ctx.onCleanup(reload.cancel);

  function renderTable({ results = [], total = 0 }) {
    if (!results.length) {
      replace(body, empty(state.namespace || state.q ? 'No flow matches.' : 'No flow yet: create one with "New flow", or start swoop with --flows <folder>.'));
    } else {
      replace(body, h('table', { class: 'table', testid: 'flows-table' },
        h('thead', null, h('tr', null, ['Namespace', 'Flow', 'Revision', 'Triggers', 'Tasks', 'Description'].map((c) => h('th', null, c)))),
        h('tbody', null, results.map((f) => h('tr', { testid: 'flow-row' },
          h('td', { class: 'muted' }, f.namespace),
          h('td', null, h('a', { href: flowHref(f.namespace, f.id), class: 'strong' }, f.id), f.disabled ? h('span', { class: 'tag' }, 'disabled') : null),
          h('td', { class: 'num' }, f.revision ?? '—'),
          h('td', null, (f.triggers || []).length ? (f.triggers || []).map((t) => h('span', { class: 'chip' }, t.id, ' · ', shortType(t.type))) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'num' }, countTasks(f)),
          h('td', { class: 'muted ellipsis', title: f.description || '' }, f.description || '')))))); 
    }
    const pages = Math.max(1, Math.ceil(total / SIZE));
    replace(pager,
      h('span', { class: 'muted' }, `${total} flow${total === 1 ? '' : 's'}`),
      h('button', { disabled: state.page <= 1, onclick: () => { state.page -= 1; load(); } }, '‹ Previous'),
      h('span', null, `page ${state.page} / ${pages}`),
      h('button', { disabled: state.page >= pages, onclick: () => { state.page += 1; load(); } }, 'Next ›'));
  }

  replace(el,
    h('div', { class: 'page-head' },
      h('h1', null, 'Flows'),
      h('div', { class: 'spacer' }),
      h('a', { class: 'button primary', href: '#/flows/new', testid: 'new-flow' }, '+ New flow')),
    h('div', { class: 'filters' }, nsInput, qInput),
    body,
    pager);
  load();
}

/** Every task of a flow, nested ones included. */
export function countTasks(flow) {
  let n = 0;
  const walk = (list) => {
    if (!Array.isArray(list)) return;
    for (const t of list) {
      n += 1;
      for (const key of ['tasks', 'then', 'else', 'defaults', 'errors', 'finally']) walk(t[key]);
      if (t.cases && typeof t.cases === 'object') Object.values(t.cases).forEach(walk);
    }
  };
  walk(flow.tasks);
  walk(flow.errors);
  walk(flow.finally);
  return n;
}
