// One execution (`#/executions/{id}`), live until it ends: its state and state history, the
// Gantt of its task runs and attempts, each task's outputs (kestra:// files as download links),
// inputs, labels, the raw trigger, its files and its logs; restart, kill and replay buttons.
// Live by server-sent events (`/follow` sends the execution at each change; the logs are fetched
// again after each), falling back to polling when the stream fails.

import { api, clearError, showError } from '../api.js';
import { ganttView } from '../components/gantt.js';
import { jsonView } from '../components/json.js';
import { badge, empty, executionHref, flowHref, fmtDate, fmtDuration, fmtNum, fmtTime, h, parseTime, replace, shortType, span, TERMINAL } from '../dom.js';
import { navigate } from '../router.js';

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR'];
const RESTARTABLE = new Set(['FAILED', 'KILLED', 'WARNING']);

export function mountExecution(el, { id }, _query, ctx) {
  let execution = null;
  let logs = [];
  let minLevel = 'TRACE';
  let source = null;

  const stateEl = h('span', { class: 'exec-state' });
  const title = h('h1', null, 'Execution ', h('span', { class: 'mono small-h' }, id));
  const restartBtn = h('button', { testid: 'execution-restart', title: 'Run the failed tasks again, in this execution', onclick: () => action('restart') }, '↻ Restart');
  const killBtn = h('button', { class: 'danger', testid: 'execution-kill', title: 'Stop it: it ends KILLED', onclick: () => action('kill') }, '■ Kill');
  const replayBtn = h('button', { testid: 'execution-replay', title: 'Run it again as a new execution, same inputs and trigger', onclick: () => action('replay') }, '⟳ Replay');
  const overview = h('div', { class: 'card' });
  const history = h('div', { class: 'card' });
  const gantt = h('div', { class: 'card' });
  const outputs = h('div', { class: 'card' });
  const side = h('div', { class: 'card' });
  const files = h('div', { class: 'card', hidden: true });
  const logList = h('div', { class: 'log-list', testid: 'logs' });
  const logCount = h('span', { class: 'muted small' });
  const levelSelect = h('select', { testid: 'log-level', title: 'Minimum level' }, LEVELS.map((l) => h('option', { value: l }, l)));
  levelSelect.addEventListener('change', () => {
    minLevel = levelSelect.value;
    renderLogs();
  });

  const buttons = h('span', { class: 'head-buttons', hidden: true }, restartBtn, killBtn, replayBtn);
  const body = h('div', { hidden: true },
    h('div', { class: 'grid-2' }, overview, history),
    gantt,
    h('div', { class: 'card' },
      h('div', { class: 'card-head' }, h('h3', null, 'Logs'), logCount, h('div', { class: 'spacer' }), levelSelect),
      logList),
    h('div', { class: 'grid-2' }, outputs, side),
    files);
  const notice = h('div', { class: 'card' }, empty('Loading…'));
  replace(el,
    h('div', { class: 'page-head' },
      h('a', { href: '#/executions', class: 'back' }, '‹ Executions'),
      title, stateEl, h('div', { class: 'spacer' }), buttons),
    notice,
    body);

  const fileLink = (uri) => api.fileUrl(id, uri);

  function render() {
    const e = execution;
    const st = e.state?.current;
    replace(stateEl, badge(st, { testid: 'execution-state' }));
    const terminal = TERMINAL.has(st);
    killBtn.disabled = terminal;
    restartBtn.disabled = !RESTARTABLE.has(st);
    document.title = `${st} · ${e.flowId} · swoop`;
    const { start, end } = span(e.state);
    const duration = (end ?? Date.now()) - (start ?? Date.now());
    const row = (k, ...v) => h('tr', null, h('th', null, k), h('td', null, ...v));
    replace(overview,
      h('h3', null, 'Overview'),
      h('table', { class: 'kv' }, h('tbody', null,
        row('Flow', h('a', { href: flowHref(e.namespace, e.flowId) }, h('span', { class: 'muted' }, `${e.namespace}.`), e.flowId), h('span', { class: 'muted' }, `  revision ${e.flowRevision ?? '—'}`)),
        row('Started', fmtDate(start)),
        row('Ended', end ? fmtDate(end) : h('span', { class: 'muted' }, 'running…')),
        row('Duration', fmtDuration(duration)),
        row('Trigger', e.trigger ? [h('strong', null, e.trigger.id), ' ', shortType(e.trigger.type)] : h('span', { class: 'muted' }, 'manual / API')),
        row('Labels', (e.labels || []).length ? (e.labels || []).map((l) => h('span', { class: 'chip', testid: 'label' }, `${l.key}: ${l.value}`)) : h('span', { class: 'muted' }, '—')),
        e.parentId || e.originalId ? row('Related', h('a', { href: executionHref(e.parentId || e.originalId) }, e.parentId || e.originalId)) : null)));
    const hist = e.state?.histories || [];
    replace(history,
      h('h3', null, 'State history'),
      h('ol', { class: 'timeline', testid: 'state-history' }, hist.map((x, i) => {
        const t = parseTime(x.date);
        const nextT = i + 1 < hist.length ? parseTime(hist[i + 1].date) : terminal ? null : Date.now();
        return h('li', null, badge(x.state), h('span', { class: 'mono small' }, ` ${fmtTime(t)}`),
          nextT !== null ? h('span', { class: 'muted small' }, ` · ${fmtDuration(nextT - t)}`) : null);
      })));
    replace(gantt, h('div', { class: 'card-head' }, h('h3', null, 'Task runs'),
      h('span', { class: 'muted small' }, `${(e.taskRunList || []).length} task run${(e.taskRunList || []).length === 1 ? '' : 's'}`)), ganttView(e));
    const withOutputs = (e.taskRunList || []).filter((t) => t.outputs && Object.keys(t.outputs).length);
    replace(outputs, h('h3', null, 'Outputs'),
      withOutputs.length || (e.outputs && Object.keys(e.outputs).length)
        ? [
          e.outputs && Object.keys(e.outputs).length ? h('div', { class: 'output' }, h('div', { class: 'output-head' }, h('strong', null, 'flow outputs')), jsonView(e.outputs, { link: fileLink })) : null,
          withOutputs.map((t) => h('div', { class: 'output', testid: 'task-output' },
            h('div', { class: 'output-head' }, h('strong', null, t.taskId), t.value !== undefined && t.value !== null ? h('span', { class: 'muted' }, ` [${t.value}]`) : null),
            jsonView(t.outputs, { link: fileLink }))),
        ]
        : empty('No output.'));
    replace(side,
      h('h3', null, 'Inputs'),
      e.inputs && Object.keys(e.inputs).length ? jsonView(e.inputs, { link: fileLink }) : empty('No input.'),
      h('h3', null, 'Trigger'),
      e.trigger ? [h('div', { class: 'muted small' }, `${e.trigger.id} · ${e.trigger.type}`), jsonView(e.trigger.variables ?? {}, { link: fileLink })] : empty('Started from the API or the command line.'));
  }

  function renderLogs() {
    const min = LEVELS.indexOf(minLevel);
    const shown = logs.filter((l) => LEVELS.indexOf(l.level) >= min);
    const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 30;
    replace(logList, shown.length
      ? shown.map((l) => h('div', { class: `log-line lv-${String(l.level).toLowerCase()}`, testid: 'log-line' },
        h('span', { class: 'log-time' }, fmtTime(Date.parse(l.timestamp))),
        h('span', { class: 'log-level' }, l.level),
        h('span', { class: 'log-task' }, l.taskId || ''),
        h('span', { class: 'log-msg' }, l.message)))
      : empty(logs.length ? 'No log line at this level.' : 'No log line yet.'));
    logCount.textContent = `${fmtNum(logs.length)} line${logs.length === 1 ? '' : 's'}`;
    if (atBottom) logList.scrollTop = logList.scrollHeight;
  }

  // The logs, fetched again after each change; never two fetches at once.
  let logsBusy = false;
  let logsAgain = false;
  async function fetchLogs() {
    if (logsBusy) {
      logsAgain = true;
      return;
    }
    logsBusy = true;
    try {
      const data = await api.logs(id);
      if (!ctx.alive) return;
      logs = Array.isArray(data) ? data : data?.results || [];
      renderLogs();
      clearError('logs');
    } catch (e) {
      showError(e, 'logs');
    } finally {
      logsBusy = false;
      if (logsAgain && ctx.alive) {
        logsAgain = false;
        fetchLogs();
      }
    }
  }

  async function loadFiles() {
    try {
      const data = await api.executionFiles(id);
      const list = data?.results || [];
      if (!ctx.alive || !list.length) return;
      files.hidden = false;
      replace(files, h('h3', null, 'Files'), h('ul', { class: 'plain files' }, list.map((f) => {
        const uri = f.uri || f.path;
        return h('li', null, h('a', { href: fileLink(uri), download: '', title: uri, testid: 'execution-file' }, String(uri).split('/').pop()),
          h('span', { class: 'muted small' }, ` ${fmtNum(f.size)} bytes · ${uri}`));
      })));
    } catch {
      // The files list is an extra: no banner for it.
    }
  }

  function update(e) {
    execution = e;
    notice.hidden = true;
    body.hidden = false;
    buttons.hidden = false;
    clearError('execution');
    render();
    fetchLogs();
    if (TERMINAL.has(e.state?.current)) {
      stopLive();
      loadFiles();
    }
  }

  let poller = null;
  let ticker = null;
  function stopLive() {
    if (source) {
      source.close();
      source = null;
    }
    if (poller) {
      poller.stop();
      poller = null;
    }
    if (ticker) {
      ticker.stop();
      ticker = null;
    }
  }
  function follow() {
    stopLive();
    // Durations and the Gantt of a running execution move with time.
    ticker = ctx.poll(() => execution && !TERMINAL.has(execution.state?.current) && render(), 1000);
    if (typeof EventSource === 'undefined') {
      startPolling();
      return;
    }
    source = new EventSource(api.followUrl(id));
    source.addEventListener('execution', (ev) => {
      try {
        update(JSON.parse(ev.data));
      } catch (err) {
        console.error(err);
      }
    });
    source.onmessage = (ev) => {
      try {
        const data = JSON.parse(ev.data);
        if (data && data.id === id) update(data);
      } catch {
        // Not an execution.
      }
    };
    source.onerror = () => {
      // The stream ends after the last state, or failed: poll until the end instead.
      if (!ctx.alive || !source) return;
      source.close();
      source = null;
      if (!execution || !TERMINAL.has(execution.state?.current)) startPolling();
    };
  }
  function startPolling() {
    if (poller) return;
    poller = ctx.poll(async () => {
      try {
        const e = await api.getExecution(id);
        if (ctx.alive) update(e);
      } catch (err) {
        showError(err, 'execution');
      }
    }, 1500);
  }
  ctx.onCleanup(stopLive);

  async function action(kind) {
    const btn = { restart: restartBtn, kill: killBtn, replay: replayBtn }[kind];
    btn.disabled = true;
    try {
      if (kind === 'replay') {
        const e = await api.replayExecution(id);
        navigate(executionHref(e.id));
        return;
      }
      const e = kind === 'restart' ? await api.restartExecution(id) : await api.killExecution(id);
      clearError('action');
      if (e && e.id === id) update(e);
      if (!TERMINAL.has(execution.state?.current) || kind === 'restart') follow();
    } catch (e) {
      showError(e, 'action');
    } finally {
      if (execution) render();
      replayBtn.disabled = false;
    }
  }

  api.getExecution(id).then((e) => {
    if (!ctx.alive) return;
    update(e);
    if (!TERMINAL.has(e.state?.current)) follow();
  }, (e) => {
    showError(e, 'execution');
    stateEl.replaceChildren();
    replace(notice, empty(e.status === 404 ? `No execution ${id}.` : 'Cannot load the execution.'));
  });
}
