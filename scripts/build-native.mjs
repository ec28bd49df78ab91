// Builds the N-API addon in native/ with node-gyp during `npm ci`.
// Node's headers come from the Debian nodejs package (/usr/include/node) when
// present, because node-gyp's header download is not reachable from CI.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'native', 'binding.gyp'))) {
  console.log('build-native: no native/binding.gyp, nothing to build');
  process.exit(0);
}
const args = ['rebuild', '--directory', join(root, 'native')];
const candidates = [process.env.npm_config_nodedir, '/usr', dirname(dirname(process.execPath))].filter(Boolean);
const nodedir = candidates.find((d) => existsSync(join(d, 'include', 'node', 'node_api.h')));
if (nodedir) args.push(`--nodedir=${nodedir}`);
const r = spawnSync('node-gyp', args, { stdio: 'inherit', cwd: root });
if (r.error || r.status !== 0) {
  console.error(`build-native: node-gyp failed (${r.error ? r.error.message : `exit ${r.status}`}); is python3, make and a C compiler installed?`);
  process.exit(1);
}
