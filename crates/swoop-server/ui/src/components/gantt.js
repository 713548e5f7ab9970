// The Gantt chart of an execution: one row per task run (children under their parent, indented),
// a bar for the task run from its creation to its end and a bar for each attempt, positioned
// relative to the execution's start and coloured by state, with a time axis.

import { badge, fmtDuration, fmtTime, h, span } from '../dom.js';

/** Task runs in tree order (each parent followed by its children), with their depth. */
export function treeOrder(taskRuns) {
  const byId = new Map(taskRuns.map((t) => [t.id, t]));
  const children = new Map();
  const roots = [];
  for (const t of taskRuns) {
    if (t.parentTaskRunId && byId.has(t.parentTaskRunId)) {
      if (!children.has(t.parentTaskRunId)) children.set(t.parentTaskRunId, []);
      children.get(t.parentTaskRunId).push(t);
    } else roots.push(t);
  }
  const out = [];
  const seen = new Set();
  const walk = (t, depth) => {
    if (seen.has(t.id)) return;
    seen.add(t.id);
    out.push({ run: t, depth });
    for (const c of children.get(t.id) || []) walk(c, depth + 1);
  };
  roots.forEach((t) => walk(t, 0));
  return out;
}

function niceStep(total) {
  const raw = total / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const f = raw / pow;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * pow;
}

/** The chart of `execution` as of `now` (ms). */
export function ganttView(execution, now = Date.now()) {
  const exec = span(execution.state);
  const runs = treeOrder(execution.taskRunList || []);
  const t0 = exec.start ?? now;
  let tEnd = exec.end ?? now;
  for (const { run } of runs) {
    const s = span(run.state);
    tEnd = Math.max(tEnd, s.end ?? (exec.end ? tEnd : now));
  }
  const total = Math.max(1, tEnd - t0);
  const pos = (t) => `${Math.min(100, Math.max(0, ((t - t0) / total) * 100))}%`;
  const width = (a, b) => `${Math.max(0.35, Math.min(100, ((b - a) / total) * 100))}%`;

  const step = niceStep(total);
  const ticks = [];
  for (let t = 0; t <= total + 1e-9 && ticks.length < 12; t += step) ticks.push(t);
  const axis = h('div', { class: 'gantt-row gantt-axis' },
    h('div', { class: 'gantt-label muted small' }, `start ${fmtTime(t0)}`),
    h('div', { class: 'gantt-track' }, ticks.map((t) => h('span', { class: 'tick', style: { left: pos(t0 + t) } }, fmtDuration(t)))),
    h('div', { class: 'gantt-dur muted small' }, 'duration'));

  const grid = () => ticks.slice(1).map((t) => h('span', { class: 'gline', style: { left: pos(t0 + t) } }));
  const rows = runs.map(({ run, depth }) => {
    const s = span(run.state);
    const start = s.start ?? t0;
    const end = s.end ?? now;
    const state = run.state?.current;
    const bars = [h('div', {
      class: `gantt-bar run st-${String(state).toLowerCase()}`,
      testid: 'gantt-bar',
      'data-kind': 'taskrun',
      style: { left: pos(start), width: width(start, end) },
      title: `${run.taskId}${run.value !== undefined && run.value !== null ? ` [${run.value}]` : ''}: ${state}\n${fmtTime(start)} → ${s.end ? fmtTime(end) : 'running'} (${fmtDuration(end - start)})`,
    })];
    (run.attempts || []).forEach((a, i) => {
      const as = span(a.state);
      if (as.start === null) return;
      const aEnd = as.end ?? now;
      const st = a.state?.current;
      bars.push(h('div', {
        class: `gantt-bar attempt st-${String(st).toLowerCase()}`,
        testid: 'gantt-bar',
        'data-kind': 'attempt',
        style: { left: pos(as.start), width: width(as.start, aEnd) },
        title: `attempt ${i + 1}: ${st}\n${fmtTime(as.start)} → ${as.end ? fmtTime(aEnd) : 'running'} (${fmtDuration(aEnd - as.start)})`,
      }));
    });
    const attempts = (run.attempts || []).length;
    return h('div', { class: 'gantt-row', 'data-task-run': run.id },
      h('div', { class: 'gantt-label', style: { paddingLeft: `${6 + depth * 14}px` }, title: run.taskId },
        depth ? h('span', { class: 'muted' }, '└ ') : null,
        h('span', { class: 'strong' }, run.taskId),
        run.value !== undefined && run.value !== null ? h('span', { class: 'muted' }, ` [${typeof run.value === 'string' ? run.value : JSON.stringify(run.value)}]`) : null,
        attempts > 1 ? h('span', { class: 'muted small' }, ` ×${attempts}`) : null),
      h('div', { class: 'gantt-track' }, grid(), bars),
      h('div', { class: 'gantt-dur' }, badge(state), ' ', h('span', { class: 'small' }, fmtDuration(end - start))));
  });
  return h('div', { class: 'gantt', testid: 'gantt' },
    axis,
    rows.length ? rows : h('div', { class: 'empty' }, 'No task has run yet.'));
}
