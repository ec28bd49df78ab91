/**
 * The local store's raison d'être: daemons in different network namespaces
 * on one host share it through the filesystem. Two processes, each in its own
 * namespace, write a key and watch for the other's.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODULE_URL = new URL('../../src/subnet/local-store.js', import.meta.url).href;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

/** Runs in a namespace: writes /n/<me>, waits (watch) for /n/<peer>, prints a JSON report. */
function peer(ns: string, dir: string, me: string, other: string) {
  const code = `
import { LocalStore } from ${JSON.stringify(MODULE_URL)};
import { readlinkSync } from 'node:fs';
const s = new LocalStore({ dir: ${JSON.stringify(dir)}, pollIntervalMs: 50 });
const seen = await new Promise(async (resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('peer key never seen')), 10000);
  const w = await s.watch('/n/', 1, {
    onEvents: (evs) => {
      const e = evs.find((e) => e.type === 'put' && e.key === '/n/${other}');
      if (e) { clearTimeout(timer); w.close().then(() => resolve(e.value)); }
    },
    onError: reject,
  });
  if (!(await s.create('/n/${me}', 'hello from ${me}', 30))) reject(new Error('create failed'));
});
console.log(JSON.stringify({ seen, netns: readlinkSync('/proc/self/ns/net') }));
await s.close();`;
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => p.on('exit', (code) => resolve({ code, out, err })));
}

it('two processes in two network namespaces share the local store', { skip: process.getuid?.() !== 0 ? 'needs root for ip netns' : false }, async () => {
  const tag = `${process.pid % 100000}`;
  const nsA = `fts-ls-${tag}-a`;
  const nsB = `fts-ls-${tag}-b`;
  const dir = mkdtempSync(join(tmpdir(), 'flannel-ts-netns-store-'));
  const created: string[] = [];
  try {
    for (const ns of [nsA, nsB]) {
      ip('netns', 'add', ns);
      created.push(ns);
    }
    const [a, b] = await Promise.all([peer(nsA, dir, 'a', 'b'), peer(nsB, dir, 'b', 'a')]);
    assert.equal(a.code, 0, a.err);
    assert.equal(b.code, 0, b.err);
    const ra = JSON.parse(a.out);
    const rb = JSON.parse(b.out);
    assert.equal(ra.seen, 'hello from b');
    assert.equal(rb.seen, 'hello from a');
    const mine = readlinkSync('/proc/self/ns/net');
    assert.notEqual(ra.netns, rb.netns, 'really two namespaces');
    assert.notEqual(ra.netns, mine);
    assert.notEqual(rb.netns, mine);
  } finally {
    for (const ns of created) spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
});
