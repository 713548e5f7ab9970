// A flow's topology as SVG, from the flow's JSON: its triggers on the left, then its tasks in
// sequence from left to right; a flowable task (Parallel, If, Switch, ForEach, Sequential,
// AllowFailure, Dag, …) is a box holding its branches stacked one above the other, forked from
// its left and joined on its right; the flow's `errors` and `finally` branches go below.

import { h } from '../dom.js';

const NODE_W = 168;
const NODE_H = 46;
const GAP_X = 34;
const GAP_Y = 14;
const PAD = 14;
const HEAD = 30;
const LABEL_W = 64;
const CHAR = 6.6;

const clip = (text, width) => {
  const max = Math.floor(width / CHAR);
  const t = String(text ?? '');
  return t.length > max ? `${t.slice(0, Math.max(1, max - 1))}…` : t;
};
const short = (type) => String(type || '').split('.').pop();

/** The branches of a flowable task: [{label, tasks}], or null for a plain task. */
export function branchesOf(task) {
  const out = [];
  const type = short(task.type);
  const list = (v) => (Array.isArray(v) ? v.map((t) => (t && t.task && !t.id ? { ...t.task, dependsOn: t.dependsOn } : t)).filter(Boolean) : null);
  if (type === 'Parallel' || type === 'EachParallel') {
    for (const t of list(task.tasks) || []) out.push({ label: '', tasks: [t] });
  } else if (type === 'If') {
    if (list(task.then)) out.push({ label: 'then', tasks: list(task.then) });
    if (list(task.else)) out.push({ label: 'else', tasks: list(task.else) });
  } else if (type === 'Switch') {
    for (const [k, v] of Object.entries(task.cases || {})) if (list(v)) out.push({ label: `= ${k}`, tasks: list(v) });
    if (list(task.defaults)) out.push({ label: 'default', tasks: list(task.defaults) });
  } else if (type === 'Dag') {
    for (const t of list(task.tasks) || []) out.push({ label: t.dependsOn?.length ? `after ${t.dependsOn.join(',')}` : '', tasks: [t] });
  } else if (list(task.tasks)) {
    out.push({ label: type === 'ForEach' || type === 'EachSequential' ? 'each' : '', tasks: list(task.tasks) });
  }
  if (list(task.errors)) out.push({ label: 'errors', tasks: list(task.errors), kind: 'errors' });
  if (list(task.finally)) out.push({ label: 'finally', tasks: list(task.finally), kind: 'finally' });
  return out.length ? out : null;
}

function leaf(task, kind) {
  return {
    w: NODE_W,
    h: NODE_H,
    render(g, x, y) {
      const cls = kind === 'trigger' ? 'topo-node trigger' : `topo-node${task.disabled ? ' disabled' : ''}`;
      g.appendChild(h('g', { class: cls, 'data-task': task.id },
        h('title', null, `${task.id}\n${task.type || ''}`),
        h('rect', { x, y, width: NODE_W, height: NODE_H, rx: kind === 'trigger' ? 23 : 6 }),
        h('text', { x: x + 12, y: y + 19, class: 'id' }, clip(task.id, NODE_W - 22)),
        h('text', { x: x + 12, y: y + 35, class: 'kind' }, clip(short(task.type), NODE_W - 22))));
    },
  };
}

function edge(g, x1, y1, x2, y2, cls = '') {
  const dx = Math.max(12, (x2 - x1) / 2);
  const d = y1 === y2 ? `M${x1},${y1} L${x2},${y2}` : `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  g.appendChild(h('path', { d, class: `topo-edge ${cls}`, 'marker-end': 'url(#topo-arrow)' }));
}

function sequence(tasks) {
  const items = tasks.map(layoutTask);
  if (!items.length) {
    return { w: 80, h: 24, render(g, x, y) { g.appendChild(h('text', { x, y: y + 16, class: 'topo-empty' }, '(no task)')); } };
  }
  const w = items.reduce((s, it) => s + it.w, 0) + GAP_X * (items.length - 1);
  const hh = Math.max(...items.map((it) => it.h));
  return {
    w,
    h: hh,
    render(g, x, y) {
      let cx = x;
      const mid = y + hh / 2;
      items.forEach((it, i) => {
        it.render(g, cx, mid - it.h / 2);
        if (i > 0) edge(g, cx - GAP_X, mid, cx, mid);
        cx += it.w + GAP_X;
      });
    },
  };
}

function layoutTask(task) {
  const branches = branchesOf(task);
  if (!branches) return leaf(task);
  const hasLabels = branches.some((b) => b.label);
  const lanes = branches.map((b) => ({ ...b, seq: sequence(b.tasks) }));
  const inner = Math.max(...lanes.map((l) => l.seq.w)) + (hasLabels ? LABEL_W : 0);
  const w = Math.max(NODE_W, inner + PAD * 2 + 24);
  const lanesH = lanes.reduce((s, l) => s + l.seq.h, 0) + GAP_Y * (lanes.length - 1);
  const hh = HEAD + lanesH + PAD;
  return {
    w,
    h: hh,
    render(g, x, y) {
      g.appendChild(h('g', { class: 'topo-group', 'data-task': task.id },
        h('title', null, `${task.id}\n${task.type || ''}`),
        h('rect', { x, y, width: w, height: hh, rx: 8 }),
        h('text', { x: x + 10, y: y + 19, class: 'id' }, clip(task.id, w / 2)),
        h('text', { x: x + w - 10, y: y + 19, class: 'kind', 'text-anchor': 'end' }, clip(short(task.type), w / 2 - 10))));
      const mid = y + hh / 2;
      let cy = y + HEAD;
      const left = x + PAD + 12 + (hasLabels ? LABEL_W : 0);
      for (const lane of lanes) {
        const laneMid = cy + lane.seq.h / 2;
        if (lane.label) {
          g.appendChild(h('text', { x: left - 8, y: laneMid - 5, 'text-anchor': 'end', class: `topo-label ${lane.kind || ''}` }, clip(lane.label, LABEL_W - 8)));
        }
        edge(g, x + 6, mid, left, laneMid, lane.kind || '');
        lane.seq.render(g, left, cy);
        if (!lane.kind) edge(g, left + lane.seq.w, laneMid, x + w - 6, mid, 'join');
        cy += lane.seq.h + GAP_Y;
      }
    },
  };
}

/** The topology SVG of a flow (its JSON, as `GET /api/v1/flows/{ns}/{id}` answers it). */
export function topologyView(flow) {
  const triggers = (flow.triggers || []).map((t) => leaf(t, 'trigger'));
  const main = sequence(flow.tasks || []);
  const extra = [];
  if (Array.isArray(flow.errors) && flow.errors.length) extra.push({ label: 'errors', seq: sequence(flow.errors), kind: 'errors' });
  if (Array.isArray(flow.finally) && flow.finally.length) extra.push({ label: 'finally', seq: sequence(flow.finally), kind: 'finally' });
  if (Array.isArray(flow.afterExecution) && flow.afterExecution.length) extra.push({ label: 'after', seq: sequence(flow.afterExecution), kind: 'finally' });

  const M = 20;
  const trigH = triggers.length ? triggers.length * NODE_H + (triggers.length - 1) * GAP_Y : 0;
  const trigW = triggers.length ? NODE_W + GAP_X * 1.6 : 0;
  const start = { w: 16 };
  const mainTop = M + 18;
  const rowH = Math.max(main.h, trigH);
  const extraH = extra.reduce((s, e) => s + e.seq.h + GAP_Y * 2 + 18, 0);
  const width = M * 2 + trigW + start.w + GAP_X + Math.max(main.w, ...extra.map((e) => e.seq.w + LABEL_W)) + 20;
  const height = mainTop + rowH + extraH + M;

  const g = h('g');
  const mid = mainTop + rowH / 2;
  const taskX = M + trigW + start.w + GAP_X;
  g.appendChild(h('text', { x: M, y: M + 4, class: 'topo-caption' }, triggers.length ? 'triggers' : ''));
  g.appendChild(h('text', { x: taskX, y: M + 4, class: 'topo-caption' }, 'tasks'));
  // Triggers, each joining the start dot.
  const dotX = M + trigW + start.w / 2;
  let ty = mid - trigH / 2;
  for (const t of triggers) {
    t.render(g, M, ty);
    edge(g, M + NODE_W, ty + NODE_H / 2, dotX - 6, mid, 'trigger');
    ty += NODE_H + GAP_Y;
  }
  g.appendChild(h('circle', { cx: dotX, cy: mid, r: 6, class: 'topo-start' }, h('title', null, 'start')));
  edge(g, dotX + 6, mid, taskX, mid);
  main.render(g, taskX, mid - main.h / 2);
  if (main.w) g.appendChild(h('circle', { cx: taskX + main.w + GAP_X / 2 + 6, cy: mid, r: 6, class: 'topo-end' }, h('title', null, 'end')));
  if (main.w) edge(g, taskX + main.w, mid, taskX + main.w + GAP_X / 2, mid);
  let ey = mainTop + rowH + GAP_Y * 2;
  for (const e of extra) {
    g.appendChild(h('text', { x: taskX, y: ey + 8, class: `topo-label ${e.kind}` }, `${e.label} (when ${e.kind === 'errors' ? 'a task fails' : 'the flow ends'})`));
    const laneTop = ey + 18;
    edge(g, dotX, mid + 6, taskX, laneTop + e.seq.h / 2, e.kind);
    e.seq.render(g, taskX, laneTop);
    ey = laneTop + e.seq.h + GAP_Y * 2;
  }
  const w = Math.ceil(width + 30);
  const hgt = Math.ceil(height);
  return h('div', { class: 'topology', testid: 'topology' },
    h('svg', { width: w, height: hgt, style: { maxWidth: '100%', minWidth: `${Math.round(w * 0.65)}px`, height: 'auto' }, viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': `topology of ${flow.namespace}.${flow.id}` },
      h('defs', null, h('marker', { id: 'topo-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        h('path', { d: 'M0,0 L10,5 L0,10 z', class: 'topo-arrowhead' }))),
      g));
}
