// The REST API client: one function per call the UI makes, every answer parsed, every error
// thrown as an ApiError carrying the API's `message` and `details` ({line, column, message}).
// Also the error banner that pages show errors in.

import { h, replace } from './dom.js';

export class ApiError extends Error {
  constructor(status, message, details = []) {
    super(message);
    this.status = status;
    this.details = Array.isArray(details) ? details : [];
  }
}

async function request(method, path, { query, body, yaml } = {}) {
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === '') continue;
      if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
      else qs.append(k, v);
    }
    const s = qs.toString();
    if (s) url += `?${s}`;
  }
  const headers = { accept: 'application/json' };
  let payload;
  if (yaml !== undefined) {
    headers['content-type'] = 'application/x-yaml';
    payload = yaml;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, `cannot reach the server: ${e.message}`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const message = (data && typeof data === 'object' && data.message) || (typeof data === 'string' && data) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message, data && data.details);
  }
  return data;
}

const enc = encodeURIComponent;
const flowPath = (ns, id) => `/api/v1/flows/${enc(ns)}/${enc(id)}`;
const triggerPath = (ns, flowId, triggerId) => `/api/v1/triggers/${enc(ns)}/${enc(flowId)}/${enc(triggerId)}`;

export const api = {
  searchFlows: (query) => request('GET', '/api/v1/flows/search', { query }),
  getFlow: (ns, id) => request('GET', flowPath(ns, id)),
  createFlow: (source) => request('POST', '/api/v1/flows', { yaml: source }),
  updateFlow: (ns, id, source) => request('PUT', flowPath(ns, id), { yaml: source }),
  deleteFlow: (ns, id) => request('DELETE', flowPath(ns, id)),
  validateFlows: (source) => request('POST', '/api/v1/flows/validate', { yaml: source }),
  flowRevisions: (ns, id) => request('GET', `${flowPath(ns, id)}/revisions`),

  searchExecutions: (query) => request('GET', '/api/v1/executions/search', { query }),
  getExecution: (id) => request('GET', `/api/v1/executions/${enc(id)}`),
  logs: (id) => request('GET', `/api/v1/logs/${enc(id)}`),
  executionFiles: (id) => request('GET', `/api/v1/executions/${enc(id)}/file/metas`),
  restartExecution: (id) => request('POST', `/api/v1/executions/${enc(id)}/restart`),
  killExecution: (id) => request('DELETE', `/api/v1/executions/${enc(id)}/kill`),
  replayExecution: (id) => request('POST', `/api/v1/executions/${enc(id)}/replay`),
  runFlow: (ns, id, inputs) => request('POST', `/api/v1/executions/${enc(ns)}/${enc(id)}`, { body: inputs || {} }),
  followUrl: (id) => `/api/v1/executions/${enc(id)}/follow`,
  fileUrl: (id, uri) => `/api/v1/executions/${enc(id)}/file?path=${enc(uri)}`,

  searchTriggers: (query) => request('GET', '/api/v1/triggers/search', { query }),
  triggerAction: (ns, flowId, triggerId, action) => request('POST', `${triggerPath(ns, flowId, triggerId)}/${action}`),

  metrics: async () => {
    let res;
    try {
      res = await fetch('/metrics', { headers: { accept: 'application/openmetrics-text, text/plain' } });
    } catch (e) {
      throw new ApiError(0, `cannot reach the server: ${e.message}`);
    }
    if (!res.ok) throw new ApiError(res.status, `GET /metrics: ${res.status} ${res.statusText}`);
    return res.text();
  },
};

// The error banner: one element in the shell, showing the latest error of each source.
const errors = new Map();
let bannerEl = null;

export function errorBanner() {
  bannerEl = h('div', { class: 'error-banner', testid: 'error-banner', role: 'alert', hidden: true });
  return bannerEl;
}

function renderBanner() {
  if (!bannerEl) return;
  if (!errors.size) {
    bannerEl.hidden = true;
    bannerEl.replaceChildren();
    return;
  }
  bannerEl.hidden = false;
  replace(
    bannerEl,
    [...errors.entries()].map(([key, msg]) =>
      h('div', { class: 'error-line' },
        h('span', { class: 'error-text' }, msg),
        h('button', { class: 'link', title: 'Dismiss', onclick: () => clearError(key) }, '×'))),
  );
}

/** Shows `error` (an ApiError, an Error or a text) in the banner under `key`. */
export function showError(error, key = 'page') {
  const msg = typeof error === 'string' ? error : error?.message || String(error);
  errors.set(key, msg);
  renderBanner();
}

/** Hides the error shown under `key` (every error without a key). */
export function clearError(key) {
  if (key === undefined) errors.clear();
  else errors.delete(key);
  renderBanner();
}
