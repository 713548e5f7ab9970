// A small SVG line chart over time: several series of {t (ms), v (number or null for a gap)},
// a y axis from 0 to a rounded maximum, a legend with each series' latest value.

import { h } from '../dom.js';

function niceMax(v) {
  if (!(v > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(v));
  const f = v / pow;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * pow;
}

/**
 * The chart. `series`: [{name, color, points: [{t, v}]}]; `format(v)` for the axis and legend;
 * `span` the time window in ms shown (the newest point at the right).
 */
export function lineChart(series, { width = 560, height = 170, format = String, span = 120000, testid } = {}) {
  const L = 58;
  const R = 10;
  const T = 10;
  const B = 22;
  const all = series.flatMap((s) => s.points.filter((p) => p.v !== null && Number.isFinite(p.v)));
  const tMax = all.length ? Math.max(...series.flatMap((s) => s.points.map((p) => p.t))) : Date.now();
  const tMin = tMax - span;
  const yMax = niceMax(Math.max(0, ...all.map((p) => p.v)) * 1.1);
  const x = (t) => L + ((t - tMin) / span) * (width - L - R);
  const y = (v) => T + (1 - v / yMax) * (height - T - B);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => h('g', null,
    h('line', { x1: L, x2: width - R, y1: y(yMax * f), y2: y(yMax * f), class: 'chart-grid' }),
    h('text', { x: L - 6, y: y(yMax * f) + 4, class: 'chart-axis', 'text-anchor': 'end' }, format(yMax * f))));
  const timeLabels = [0, 0.5, 1].map((f) => h('text', {
    x: L + f * (width - L - R), y: height - 6, class: 'chart-axis', 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle',
  }, f === 1 ? 'now' : `−${Math.round(((1 - f) * span) / 1000)} s`));
  const lines = series.map((s) => {
    // One path, broken where a point has no value.
    let d = '';
    let pen = false;
    for (const p of s.points) {
      if (p.t < tMin || p.v === null || !Number.isFinite(p.v)) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
      pen = true;
    }
    const lastPt = [...s.points].reverse().find((p) => p.v !== null && Number.isFinite(p.v) && p.t >= tMin);
    return h('g', null,
      d ? h('path', { d, class: 'chart-line', style: { stroke: s.color } }) : null,
      lastPt ? h('circle', { cx: x(lastPt.t), cy: y(lastPt.v), r: 2.5, style: { fill: s.color } }) : null);
  });
  const legend = h('div', { class: 'legend' }, series.map((s) => {
    const last = [...s.points].reverse().find((p) => p.v !== null && Number.isFinite(p.v));
    return h('span', { class: 'legend-item' }, h('i', { style: { background: s.color } }), s.name, ' ', h('strong', null, last ? format(last.v) : '—'));
  }));
  return h('div', { class: 'chart', testid, 'data-points': Math.max(0, ...series.map((s) => s.points.length)) },
    legend,
    h('svg', { viewBox: `0 0 ${width} ${height}`, width: '100%', class: 'chart-svg' },
      grid, timeLabels, lines,
      all.length ? null : h('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'chart-axis' }, 'collecting…')));
}
