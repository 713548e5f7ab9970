// Pretty JSON as DOM: indented, coloured by kind, with every `kestra://` string turned into a link
// (to the execution's file download) by a given `link(uri)`.

import { h } from '../dom.js';

/** A <pre> showing `value`; `link(uri)` gives the href of a `kestra://` string, when set. */
export function jsonView(value, { link } = {}) {
  const out = [];
  const str = (s) => {
    const text = JSON.stringify(s);
    if (link && typeof s === 'string' && s.startsWith('kestra://')) {
      out.push(h('a', { class: 'j-str j-file', href: link(s), testid: 'output-file', download: '' }, text));
    } else out.push(h('span', { class: 'j-str' }, text));
  };
  const walk = (v, indent) => {
    if (v === null || v === undefined) out.push(h('span', { class: 'j-null' }, 'null'));
    else if (typeof v === 'string') str(v);
    else if (typeof v === 'number' || typeof v === 'boolean') out.push(h('span', { class: `j-${typeof v}` }, String(v)));
    else if (Array.isArray(v)) {
      if (!v.length) {
        out.push('[]');
        return;
      }
      if (v.every((x) => x === null || typeof x !== 'object') && JSON.stringify(v).length <= 60) {
        // A short list of plain values on one line.
        out.push('[');
        v.forEach((x, i) => {
          walk(x, indent);
          if (i < v.length - 1) out.push(', ');
        });
        out.push(']');
        return;
      }
      out.push('[\n');
      v.forEach((x, i) => {
        out.push(' '.repeat(indent + 2));
        walk(x, indent + 2);
        out.push(i < v.length - 1 ? ',\n' : '\n');
      });
      out.push(`${' '.repeat(indent)}]`);
    } else {
      const keys = Object.keys(v);
      if (!keys.length) {
        out.push('{}');
        return;
      }
      out.push('{\n');
      keys.forEach((k, i) => {
        out.push(' '.repeat(indent + 2), h('span', { class: 'j-key' }, JSON.stringify(k)), ': ');
        walk(v[k], indent + 2);
        out.push(i < keys.length - 1 ? ',\n' : '\n');
      });
      out.push(`${' '.repeat(indent)}}`);
    }
  };
  walk(value, 0);
  return h('pre', { class: 'json' }, out);
}

/** Every `kestra://` string inside `value`. */
export function fileUris(value, acc = []) {
  if (typeof value === 'string') {
    if (value.startsWith('kestra://')) acc.push(value);
  } else if (Array.isArray(value)) value.forEach((v) => fileUris(v, acc));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => fileUris(v, acc));
  return acc;
}
