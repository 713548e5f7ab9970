// A flow's page (`#/flows/{ns}/{id}?tab=`) and the new flow page (`#/flows/new`): the YAML
// editor validated as you type with its problems list, Save (create or new revision), and the
// tabs Topology, Revisions (diff of two), Triggers (the live panel) and Executions.

import { api, clearError, showError } from '../api.js';
import { createEditor } from '../components/editor.js';
import { diffView } from '../components/diff.js';
import { executionsTable } from '../components/executions-table.js';
import { topologyView } from '../components/topology.js';
import { triggerPanel } from '../components/trigger-panel.js';
import { empty, executionHref, flowHref, fmtDate, h, replace } from '../dom.js';
import { flash, navigate, setQuery, takeFlash } from '../router.js';

const TEMPLATE = `id: my_flow
namespace: company.team
description: What this flow does.

tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: "Hello from {{ flow.id }}"

triggers:
  - id: webhook
    type: io.kestra.plugin.core.trigger.Webhook
    key: change-me
`;

const TABS = [
  ['editor', 'Editor'],
  ['topology', 'Topology'],
  ['revisions', 'Revisions'],
  ['triggers', 'Triggers'],
  ['executions', 'Executions'],
];

/** The validation answer (one entry per document) as a flat list of problems. */
export function problemsOf(results) {
  const out = [];
  const push = (p, severity) => {
    if (typeof p === 'string') {
      const m = /^(\d+):(\d+):\s*(.*)$/s.exec(p);
      out.push(m ? { line: +m[1], column: +m[2], message: m[3], severity } : { line: 0, column: 0, message: p, severity });
    } else if (p) {
      out.push({ line: p.line || 0, column: p.column || 0, message: p.message || String(p), path: p.path, severity });
    }
  };
  for (const r of Array.isArray(results) ? results : [results]) {
    if (!r) continue;
    const errors = r.problems || r.errors;
    if (Array.isArray(errors)) errors.forEach((p) => push(p, 'error'));
    else if (typeof r.constraints === 'string' && r.constraints) r.constraints.split('\n').forEach((p) => push(p, 'error'));
    (r.warnings || []).forEach((p) => push(p, 'warning'));
    (r.infos || []).forEach((p) => push(p, 'info'));
    if (r.outdated) push({ line: 0, message: 'the flow uses outdated properties' }, 'warning');
    (r.deprecationPaths || []).forEach((p) => push({ line: 0, message: `deprecated: ${p}` }, 'warning'));
  }
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

export function mountFlow(el, params, query, ctx) {
  const isNew = !params.ns;
  const ns = params.ns;
  const id = params.id;
  let flow = null;
  let tab = isNew ? 'editor' : (TABS.some(([k]) => k === query.get('tab')) ? query.get('tab') : 'editor');
  let tabCtx = null;

  const title = h('h1', null, isNew ? 'New flow' : [h('span', { class: 'muted' }, `${ns}.`), id]);
  const revTag = h('span', { class: 'tag' });
  const modified = h('span', { class: 'tag warn', hidden: true }, 'modified');
  const saved = h('span', { class: 'saved', testid: 'saved', hidden: true });
  const saveBtn = h('button', { class: 'primary', testid: 'save', title: 'Save (Ctrl-S)', onclick: () => save() }, isNew ? 'Create' : 'Save');
  const runBtn = isNew ? null : h('button', { testid: 'run', title: 'Run the flow now (default inputs)', onclick: () => run() }, '▶ Run');
  const status = h('span', { class: 'validation muted', testid: 'validation-status' }, 'Validating…');
  const problemsList = h('ul', { class: 'problems', testid: 'problems' });
  const editorEl = h('div', { class: 'editor', testid: 'editor' });
  const panels = Object.fromEntries(TABS.map(([k]) => [k, h('section', { class: `tab-panel panel-${k}`, hidden: true })]));
  const tabButtons = TABS.map(([k, label]) => h('button', { class: 'tab', testid: `tab-${k}`, 'data-tab': k, onclick: () => showTab(k), hidden: isNew && k !== 'editor' }, label));

  panels.editor.append(editorEl, h('div', { class: 'problems-head' }, status), problemsList);

  let editor = null;
  let problems = [];

  const renderProblems = (list) => {
    problems = list;
    const errors = list.filter((p) => p.severity === 'error');
    status.className = `validation ${errors.length ? 'bad' : 'ok'}`;
    status.textContent = errors.length
      ? `${errors.length} problem${errors.length === 1 ? '' : 's'}`
      : list.length ? 'Valid, with remarks' : 'Valid';
    replace(problemsList, list.map((p) => h('li', {
      class: `problem ${p.severity}`,
      testid: p.severity === 'error' ? 'problem' : `problem-${p.severity}`,
      title: p.path || '',
      onclick: () => p.line && editor.goToLine(p.line),
    }, p.line ? `line ${p.line}: ${p.message}` : p.message)));
  };

  const validate = async (text) => {
    if (!text.trim()) return [];
    return problemsOf(await api.validateFlows(text));
  };

  function makeEditor(doc) {
    editor = createEditor(editorEl, {
      doc,
      validate,
      onProblems: (list) => {
        clearError('validate');
        renderProblems(list);
      },
      onValidateError: (e) => showError(`Cannot validate: ${e.message}`, 'validate'),
      onChange: (text) => {
        saved.hidden = true;
        status.className = 'validation muted';
        status.textContent = 'Validating…';
        modified.hidden = isNew || !flow || text === flow.source;
      },
      onSave: () => save(),
    });
    ctx.onCleanup(() => editor.destroy());
  }

  function showSaved(revision) {
    saved.hidden = false;
    saved.textContent = `✓ Saved revision ${revision}`;
  }

  async function save() {
    const text = editor.getText();
    saveBtn.disabled = true;
    try {
      const result = isNew ? await api.createFlow(text) : await api.updateFlow(ns, id, text);
      clearError('save');
      if (isNew) {
        flash({ saved: result.revision });
        navigate(flowHref(result.namespace, result.id));
        return;
      }
      flow = result;
      revTag.textContent = `revision ${result.revision}`;
      modified.hidden = editor.getText() === result.source;
      showSaved(result.revision);
      if (tab !== 'editor') showTab(tab);
    } catch (e) {
      if (e.details && e.details.length) {
        const list = problemsOf([{ errors: e.details }]);
        renderProblems(list);
        editor.showProblems(list);
      }
      showError(e, 'save');
    } finally {
      saveBtn.disabled = false;
    }
  }

  async function run() {
    runBtn.disabled = true;
    try {
      const execution = await api.runFlow(ns, id, {});
      navigate(executionHref(execution.id));
    } catch (e) {
      showError(e, 'run');
      runBtn.disabled = false;
    }
  }

  function showTab(k) {
    tab = k;
    for (const b of tabButtons) b.classList.toggle('active', b.dataset.tab === k);
    for (const [key, p] of Object.entries(panels)) p.hidden = key !== k;
    if (!isNew) setQuery({ tab: k === 'editor' ? '' : k });
    if (tabCtx) tabCtx.destroy();
    tabCtx = ctx.child();
    if (k === 'topology') renderTopology();
    if (k === 'revisions') renderRevisions(tabCtx);
    if (k === 'triggers') replace(panels.triggers, h('div', { class: 'card' }, triggerPanel(tabCtx, { namespace: ns, flowId: id, declared: flow?.triggers || [], showFlow: false })));
    if (k === 'executions') renderExecutions(tabCtx);
  }

  function renderTopology() {
    if (!flow) return;
    const dirty = editor && editor.getText() !== flow.source;
    replace(panels.topology, h('div', { class: 'card scroll-x' },
      h('div', { class: 'card-head' }, h('h3', null, `Revision ${flow.revision}`), dirty ? h('span', { class: 'muted small' }, ' (the saved revision: save to see your changes)') : null),
      topologyView(flow)));
  }

  async function renderRevisions(c) {
    replace(panels.revisions, h('div', { class: 'card' }, empty('Loading…')));
    let revisions;
    try {
      revisions = await api.flowRevisions(ns, id);
    } catch (e) {
      showError(e, 'revisions');
      return;
    }
    if (!c.alive) return;
    if (!revisions.length) {
      replace(panels.revisions, h('div', { class: 'card' }, empty('No revision.')));
      return;
    }
    const option = (r) => h('option', { value: r.revision }, `revision ${r.revision} · ${fmtDate(Date.parse(r.updated))}`);
    const from = h('select', { testid: 'revision-from' }, revisions.map(option));
    const to = h('select', { testid: 'revision-to' }, revisions.map(option));
    from.value = String(revisions[Math.max(0, revisions.length - 2)].revision);
    to.value = String(revisions[revisions.length - 1].revision);
    const out = h('div');
    const byRev = (v) => revisions.find((r) => String(r.revision) === String(v));
    const render = () => replace(out, diffView(byRev(from.value)?.source, byRev(to.value)?.source));
    from.addEventListener('change', render);
    to.addEventListener('change', render);
    const restore = h('button', {
      title: 'Put the "from" revision into the editor (save to make it the newest)',
      onclick: () => {
        editor.setText(byRev(from.value).source);
        showTab('editor');
      },
    }, 'Load "from" into the editor');
    replace(panels.revisions, h('div', { class: 'card' },
      h('div', { class: 'filters' }, h('label', null, 'From ', from), h('label', null, 'to ', to), h('div', { class: 'spacer' }), restore),
      out));
    render();
  }

  async function renderExecutions(c) {
    const link = h('a', { href: `#/executions?namespace=${encodeURIComponent(ns)}&flowId=${encodeURIComponent(id)}`, testid: 'flow-executions-link' }, 'All executions of this flow →');
    const holder = h('div', null, empty('Loading…'));
    replace(panels.executions, h('div', { class: 'card' }, h('div', { class: 'card-head' }, h('h3', null, 'Latest executions'), h('div', { class: 'spacer' }), link), holder));
    c.poll(async () => {
      try {
        const page = await api.searchExecutions({ namespace: ns, flowId: id, size: 10 });
        if (!c.alive) return;
        replace(holder, page.results?.length ? executionsTable(page.results, { showFlow: false }) : empty('No execution yet.'));
      } catch (e) {
        showError(e, 'executions');
      }
    }, 3000);
  }

  const tabsEl = h('div', { class: 'tabs' }, tabButtons);
  replace(el,
    h('div', { class: 'page-head' },
      h('a', { href: '#/flows', class: 'back' }, '‹ Flows'),
      title, isNew ? null : revTag, modified, h('div', { class: 'spacer' }), saved, runBtn, saveBtn),
    tabsEl,
    Object.values(panels));

  const flashed = takeFlash();
  if (isNew) {
    makeEditor(TEMPLATE);
    showTab('editor');
    return;
  }
  editorEl.append(h('div', { class: 'empty' }, 'Loading…'));
  api.getFlow(ns, id).then((f) => {
    if (!ctx.alive) return;
    flow = f;
    editorEl.replaceChildren();
    revTag.textContent = `revision ${f.revision}`;
    makeEditor(f.source || '');
    if (flashed && flashed.saved !== undefined) showSaved(flashed.saved);
    showTab(tab);
  }, (e) => {
    showError(e, 'flow');
    for (const x of [tabsEl, saveBtn, runBtn, revTag, panels.editor]) x.hidden = true;
    el.appendChild(h('div', { class: 'card' }, empty(e.status === 404 ? `No flow ${ns}.${id}: it was deleted, or never created.` : 'Cannot load the flow.')));
  });
}
