// A line diff of two texts (longest common subsequence) rendered as a unified table: removed
// lines red, added lines green, unchanged lines between, long unchanged runs folded.

import { h } from '../dom.js';

/** The diff of two line lists: [{op: ' ' | '-' | '+', a, b, text}], a/b 1-based line numbers. */
export function diffLines(a, b) {
  // Common prefix and suffix first: revisions usually differ in a few lines.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA -= 1;
    endB -= 1;
  }
  const n = endA - start;
  const m = endB - start;
  const out = [];
  for (let i = 0; i < start; i += 1) out.push({ op: ' ', a: i + 1, b: i + 1, text: a[i] });
  if (n * m > 25e6) {
    // Too large for the table: everything in the middle as removed then added.
    for (let i = start; i < endA; i += 1) out.push({ op: '-', a: i + 1, b: null, text: a[i] });
    for (let j = start; j < endB; j += 1) out.push({ op: '+', a: null, b: j + 1, text: b[j] });
  } else {
    // lcs[i][j]: the LCS length of a[start+i..endA] and b[start+j..endB].
    const w = m + 1;
    const lcs = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i -= 1) {
      for (let j = m - 1; j >= 0; j -= 1) {
        lcs[i * w + j] = a[start + i] === b[start + j]
          ? lcs[(i + 1) * w + j + 1] + 1
          : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[start + i] === b[start + j]) {
        out.push({ op: ' ', a: start + i + 1, b: start + j + 1, text: a[start + i] });
        i += 1;
        j += 1;
      } else if (j < m && (i >= n || lcs[i * w + j + 1] >= lcs[(i + 1) * w + j])) {
        out.push({ op: '+', a: null, b: start + j + 1, text: b[start + j] });
        j += 1;
      } else {
        out.push({ op: '-', a: start + i + 1, b: null, text: a[start + i] });
        i += 1;
      }
    }
  }
  for (let k = 0; k < a.length - endA; k += 1) out.push({ op: ' ', a: endA + k + 1, b: endB + k + 1, text: a[endA + k] });
  return out;
}

const split = (text) => {
  const lines = String(text ?? '').split('\n');
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  return lines;
};

/** The diff table of `before` → `after`, unchanged runs longer than 2×`context` folded. */
export function diffView(before, after, context = 3) {
  const rows = diffLines(split(before), split(after));
  const added = rows.filter((r) => r.op === '+').length;
  const removed = rows.filter((r) => r.op === '-').length;
  const changed = rows.map((r) => r.op !== ' ');
  const near = (i) => {
    for (let k = Math.max(0, i - context); k <= Math.min(rows.length - 1, i + context); k += 1) if (changed[k]) return true;
    return false;
  };
  const body = [];
  let folded = 0;
  const flushFold = () => {
    if (folded) body.push(h('tr', { class: 'fold' }, h('td', { colspan: 4 }, `⋯ ${folded} unchanged line${folded === 1 ? '' : 's'}`)));
    folded = 0;
  };
  rows.forEach((r, i) => {
    if (r.op === ' ' && !near(i) && added + removed > 0) {
      folded += 1;
      return;
    }
    flushFold();
    const cls = r.op === '+' ? 'add' : r.op === '-' ? 'del' : '';
    body.push(h('tr', { class: cls, testid: r.op === ' ' ? 'diff-same' : r.op === '+' ? 'diff-add' : 'diff-del' },
      h('td', { class: 'ln' }, r.a ?? ''),
      h('td', { class: 'ln' }, r.b ?? ''),
      h('td', { class: 'op' }, r.op),
      h('td', { class: 'code' }, r.text)));
  });
  flushFold();
  return h('div', { class: 'diff', testid: 'diff' },
    h('div', { class: 'diff-summary' },
      h('span', { class: 'add-count' }, `+${added}`), ' ', h('span', { class: 'del-count' }, `−${removed}`),
      added + removed === 0 ? h('span', { class: 'muted' }, ' identical') : null),
    h('table', null, h('tbody', null, body)));
}
