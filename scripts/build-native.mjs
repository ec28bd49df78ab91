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
// node-gyp's own chatter (its arguments, paths, "gyp info ok") is kept back: a build that
// works prints nothing; one that fails prints the compiler's or make's own lines.
const r = spawnSync('node-gyp', args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
if (r.error || r.status !== 0) {
  const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').filter((l) => l.trim() && !/^gyp (info|verb|sill|http)/.test(l));
  const compiler = lines.filter((l) => /error|Error|not found|No such file|cannot|fatal/.test(l) && !/^gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l));
  for (const l of (compiler.length ? compiler : lines).slice(-25)) console.error(l);
  console.error(`build-native: building the native addon failed (${r.error ? r.error.message : `exit ${r.status}`}); it needs python3, make and a C compiler (apt-get install python3 make g++)`);
  process.exit(1);
}
