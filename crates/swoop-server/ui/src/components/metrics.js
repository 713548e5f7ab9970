// Reading `/metrics` (OpenMetrics / Prometheus text): samples with their labels, sums of
// counters over label sets, and quantiles of a histogram from its cumulative buckets
// (interpolated linearly inside the bucket, as Prometheus' histogram_quantile does).

/** Parses the text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let name;
    let labels = {};
    let rest;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    if (brace !== -1 && (space === -1 || brace < space)) {
      name = line.slice(0, brace);
      const close = findClose(line, brace);
      labels = parseLabels(line.slice(brace + 1, close));
      rest = line.slice(close + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const v = rest.split(/\s+/)[0];
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
    if (name && !Number.isNaN(value)) samples.push({ name, labels, value });
  }
  return samples;
}

function findClose(line, from) {
  let inStr = false;
  for (let i = from + 1; i < line.length; i += 1) {
    const c = line[i];
    if (inStr) {
      if (c === '\\') i += 1;
      else if (c === '"') inStr = false;
    } else if (c === '"') inStr = true;
    else if (c === '}') return i;
  }
  return line.length;
}

function parseLabels(text) {
  const labels = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/g;
  let m;
  while ((m = re.exec(text))) labels[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
  return labels;
}

/** The sum of the samples named `name` whose labels match `filter` ({label: value}). */
export function sum(samples, name, filter = {}) {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(filter).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** The samples named `name` grouped by the labels `keys`: Map of "a|b" → {labels, value}. */
export function groupBy(samples, name, keys) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = keys.map((k) => s.labels[k] ?? '').join('|');
    const g = out.get(key) || { labels: Object.fromEntries(keys.map((k) => [k, s.labels[k] ?? ''])), value: 0 };
    g.value += s.value;
    out.set(key, g);
  }
  return out;
}

/** The cumulative buckets of histogram `base` summed over every label set: [{le, count}]. */
export function buckets(samples, base) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${base}_bucket`) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    if (Number.isNaN(le)) continue;
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/** The bucket counts of `now` minus those of `before` (what happened between two scrapes). */
export function bucketDelta(now, before) {
  const prev = new Map((before || []).map((b) => [b.le, b.count]));
  return now.map((b) => ({ le: b.le, count: Math.max(0, b.count - (prev.get(b.le) || 0)) }));
}

/** The `q` quantile (0..1) of cumulative buckets, or null when they count nothing. */
export function quantile(q, cumulative) {
  if (!cumulative.length) return null;
  const total = cumulative[cumulative.length - 1].count;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of cumulative) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe; // Above the last finite bound: its bound, the best known.
      const inBucket = b.count - prevCount;
      if (inBucket <= 0) return b.le;
      return prevLe + (b.le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}
