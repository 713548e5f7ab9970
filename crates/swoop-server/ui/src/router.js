// Hash routing: `#/path/segments?query`. Each route mounts a page into the content element with a
// `ctx` that owns the page's timers, event sources and clean-ups, all released when the route
// changes. Also `setQuery()` to update the hash's query without remounting, and a one-shot flash
// message a page can leave for the next one.

import { clearError } from './api.js';

const routes = [];
let current = null;
let container = null;
let onChange = () => {};
let flashMessage = null;

/** Adds a route: `pattern` like `/flows/:ns/:id`; `mount(el, params, query, ctx)`. */
export function route(pattern, mount, nav) {
  const parts = pattern.split('/').filter(Boolean);
  routes.push({ parts, mount, nav });
}

/** The current hash split into its path segments and query. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, '') || '/dashboard';
  const [path, qs = ''] = raw.split('?');
  const segments = path.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return { path, segments, query: new URLSearchParams(qs) };
}

function match(segments) {
  for (const r of routes) {
    if (r.parts.length !== segments.length) continue;
    const params = {};
    let ok = true;
    r.parts.forEach((p, i) => {
      if (p.startsWith(':')) params[p.slice(1)] = segments[i];
      else if (p !== segments[i]) ok = false;
    });
    if (ok) return { route: r, params };
  }
  return null;
}

/** A page's lifetime: what it starts here stops when the page goes. */
class Context {
  constructor() {
    this.alive = true;
    this.cleanups = [];
  }
  /** Runs `fn` now and then every `ms`, never twice at once; stops with the page. */
  poll(fn, ms) {
    let timer = null;
    let stopped = false;
    let running = false;
    let again = false;
    const tick = async () => {
      if (stopped || !this.alive) return;
      running = true;
      try {
        await fn();
      } catch (e) {
        console.error(e);
      } finally {
        running = false;
        if (!stopped && this.alive) {
          clearTimeout(timer);
          if (again) {
            again = false;
            timer = setTimeout(tick, 0);
          } else {
            timer = setTimeout(tick, ms);
          }
        }
      }
    };
    tick();
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
    };
    this.cleanups.push(stop);
    const now = () => {
      if (running) again = true;
      else {
        clearTimeout(timer);
        tick();
      }
    };
    return { stop, now };
  }
  timeout(fn, ms) {
    const t = setTimeout(() => this.alive && fn(), ms);
    this.cleanups.push(() => clearTimeout(t));
  }
  onCleanup(fn) {
    this.cleanups.push(fn);
  }
  /** A lifetime inside this one: destroyed with it, or earlier. */
  child() {
    const c = new Context();
    this.cleanups.push(() => c.destroy());
    return c;
  }
  destroy() {
    this.alive = false;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

function render() {
  const { segments, query } = parseHash();
  if (current) current.destroy();
  clearError();
  const ctx = new Context();
  current = ctx;
  container.replaceChildren();
  window.scrollTo(0, 0);
  const m = match(segments);
  if (!m) {
    location.replace('#/dashboard');
    return;
  }
  onChange(m.route.nav);
  try {
    const r = m.route.mount(container, m.params, query, ctx);
    if (r && typeof r.catch === 'function') r.catch((e) => console.error(e));
  } catch (e) {
    console.error(e);
  }
}

/** Starts routing into `el`; `navChanged(name)` is told which nav entry is active. */
export function start(el, navChanged) {
  container = el;
  onChange = navChanged;
  window.addEventListener('hashchange', render);
  if (!location.hash) location.replace('#/dashboard');
  render();
}

/** Goes to `hash` (remounting the page, even when it is the current one). */
export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

/** Replaces the hash's query without remounting the page. */
export function setQuery(params) {
  const { path } = parseHash();
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
    else qs.set(k, v);
  }
  const s = qs.toString();
  history.replaceState(null, '', `#${path}${s ? `?${s}` : ''}`);
}

/** Leaves a message for the next page to take with `takeFlash()`. */
export function flash(message) {
  flashMessage = message;
}

export function takeFlash() {
  const m = flashMessage;
  flashMessage = null;
  return m;
}
