// A table of executions (id link, namespace, flow, state badge, start, duration, trigger),
// used by the executions page and a flow's Executions tab.

import { badge, executionHref, flowHref, fmtDate, fmtDuration, h, shortType, span, TERMINAL } from '../dom.js';

/** The table of `executions`; `showFlow` false leaves out the namespace and flow columns. */
export function executionsTable(executions, { showFlow = true } = {}) {
  const now = Date.now();
  return h('table', { class: 'table executions', testid: 'executions-table' },
    h('thead', null, h('tr', null,
      ['Id', showFlow ? 'Namespace' : null, showFlow ? 'Flow' : null, 'State', 'Started', 'Duration', 'Trigger', 'Labels']
        .filter((c) => c !== null).map((c) => h('th', null, c)))),
    h('tbody', null, executions.map((e) => {
      const { start, end } = span(e.state);
      const running = !TERMINAL.has(e.state?.current);
      const duration = e.state?.duration && typeof e.state.duration === 'number'
        ? e.state.duration * 1000
        : start !== null ? (end ?? now) - start : null;
      return h('tr', { testid: 'execution-row', 'data-id': e.id },
        h('td', { class: 'mono' }, h('a', { href: executionHref(e.id), title: e.id }, shortId(e.id))),
        showFlow ? h('td', { class: 'muted' }, e.namespace) : null,
        showFlow ? h('td', null, h('a', { href: flowHref(e.namespace, e.flowId) }, e.flowId)) : null,
        h('td', null, badge(e.state?.current)),
        h('td', { class: 'nowrap' }, fmtDate(start)),
        h('td', { class: 'num nowrap' }, fmtDuration(duration), running ? h('span', { class: 'muted' }, ' …') : null),
        h('td', null, e.trigger ? [h('span', { class: 'strong' }, e.trigger.id), ' ', shortType(e.trigger.type)] : h('span', { class: 'muted' }, 'manual')),
        h('td', null, (e.labels || []).slice(0, 4).map((l) => h('span', { class: 'chip' }, `${l.key}:${l.value}`))));
    })));
}

/** The last 12 characters of an id: enough to tell executions apart in a table. */
export const shortId = (id) => (String(id).length > 14 ? `…${String(id).slice(-12)}` : String(id));
