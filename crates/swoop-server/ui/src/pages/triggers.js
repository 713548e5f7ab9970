// The triggers page (`#/triggers?namespace=`): every trigger running here, live (the shared
// trigger panel, polled every second), with a namespace filter.

import { debounce, h, replace } from '../dom.js';
import { triggerPanel } from '../components/trigger-panel.js';
import { setQuery } from '../router.js';

export function mountTriggers(el, _params, query, ctx) {
  let namespace = query.get('namespace') || '';
  const holder = h('div', { class: 'card' });
  let panelCtx = null;
  const show = () => {
    // A child lifetime, so a new filter stops the previous panel's polling.
    if (panelCtx) panelCtx.destroy();
    panelCtx = ctx.child();
    replace(holder, triggerPanel(panelCtx, { namespace: namespace || undefined }));
  };
  const input = h('input', { type: 'search', placeholder: 'Namespace', title: 'A namespace and its children', value: namespace, testid: 'triggers-namespace' });
  const reload = debounce(() => {
    namespace = input.value.trim();
    setQuery({ namespace });
    show();
  }, 300);
  input.addEventListener('input', reload);
  ctx.onCleanup(() => {
    reload.cancel();
    if (panelCtx) panelCtx.destroy();
  });
  replace(el,
    h('div', { class: 'page-head' }, h('h1', null, 'Triggers'), h('div', { class: 'spacer' }),
      h('span', { class: 'muted small' }, 'Realtime and schedule triggers, live every second')),
    h('div', { class: 'filters' }, input),
    holder);
  show();
}
