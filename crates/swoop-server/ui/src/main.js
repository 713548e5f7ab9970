// The app's entry point: the shell (header with the nav bar, the error banner, the content) and
// the routes of every page.

import { errorBanner } from './api.js';
import { h } from './dom.js';
import { route, start } from './router.js';
import { mountDashboard } from './pages/dashboard.js';
import { mountFlows } from './pages/flows.js';
import { mountFlow } from './pages/flow.js';
import { mountExecutions } from './pages/executions.js';
import { mountExecution } from './pages/execution.js';
import { mountTriggers } from './pages/triggers.js';

const NAV = [
  ['dashboard', 'Dashboard', '#/dashboard'],
  ['flows', 'Flows', '#/flows'],
  ['executions', 'Executions', '#/executions'],
  ['triggers', 'Triggers', '#/triggers'],
];

function shell() {
  const links = NAV.map(([key, label, href]) => h('a', { href, 'data-nav': key, testid: `nav-${key}` }, label));
  const header = h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/dashboard' }, h('span', { class: 'logo' }, '◆'), 'swoop'),
    h('nav', null, links),
    h('a', { class: 'api-link', href: '/api/v1/openapi.json', target: '_blank', rel: 'noopener' }, 'API'));
  const content = h('main', { id: 'content' });
  const app = document.getElementById('app');
  app.replaceChildren(header, errorBanner(), content);
  return { content, links };
}

const { content, links } = shell();

route('/dashboard', mountDashboard, 'dashboard');
route('/flows', mountFlows, 'flows');
route('/flows/new', (el, p, q, ctx) => mountFlow(el, {}, q, ctx), 'flows');
route('/flows/:ns/:id', mountFlow, 'flows');
route('/executions', mountExecutions, 'executions');
route('/executions/:id', mountExecution, 'executions');
route('/triggers', mountTriggers, 'triggers');

start(content, (nav) => {
  for (const a of links) a.classList.toggle('active', a.dataset.nav === nav);
});
