// Builds dist/cjs with tsc, then an ESM wrapper (dist/esm) that re-exports the CommonJS build,
// so ESM and CommonJS users share one copy of the code (no dual-package hazard: error classes
// and stores are the same objects whichever way the package is loaded).
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
});
// The admin console's static files (HTML is made at run time; JS modules and CSS are copied as
// they are: no bundling). createConsoleHandler reads every file it serves when it is made, so
// making one from the build proves the compiled package has them all (and finds the vendored
// preact, htm and uPlot modules in node_modules).
cpSync(join(root, 'src/console/static'), join(root, 'dist/cjs/console/static'), { recursive: true });
const require = createRequire(import.meta.url);
require(join(root, 'dist/cjs/console/console.js')).createConsoleHandler();
const names = Object.keys(require(join(root, 'dist/cjs/index.js'))).filter(
  (n) => n !== 'default' && n !== '__esModule',
);
const esm = join(root, 'dist/esm');
mkdirSync(esm, { recursive: true });
writeFileSync(join(esm, 'package.json'), '{ "type": "module" }\n');
writeFileSync(
  join(esm, 'index.js'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`,
);
writeFileSync(join(esm, 'index.d.ts'), `export * from '../cjs/index.js';\n`);
console.log(`built dist/cjs and dist/esm (${names.length} exports)`);
