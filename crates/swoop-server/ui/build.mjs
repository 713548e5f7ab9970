// Builds the UI into dist/: src/main.js bundled by esbuild (CodeMirror included) into
// dist/app.js, src/app.css into dist/app.css, src/index.html copied. The three files are what the
// swoop binary embeds (see ../src/ui.rs); this prints each one's raw and gzip size.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: [join(root, 'src/main.js')],
  outfile: join(dist, 'app.js'),
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  sourcemap: false,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
});

// Every style sheet of src/, in a fixed order, into one file.
const css = ['app.css'].map((f) => readFileSync(join(root, 'src', f), 'utf8')).join('\n');
writeFileSync(join(dist, 'app.css'), css);
writeFileSync(join(dist, 'index.html'), readFileSync(join(root, 'src/index.html')));

let raw = 0;
let gz = 0;
const kb = (n) => (n / 1024).toFixed(1).padStart(7) + ' KB';
for (const f of ['index.html', 'app.js', 'app.css']) {
  const bytes = readFileSync(join(dist, f));
  const z = gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length;
  gz += z;
  console.log(`dist/${f.padEnd(10)} ${kb(bytes.length)}  gzip ${kb(z)}`);
}
console.log(`${'total'.padEnd(15)} ${kb(raw)}  gzip ${kb(gz)}`);
