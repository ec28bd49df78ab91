import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, readdirSync, existsSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStore } from '../../src/subnet/local-store.js';
import { loadNative } from '../../src/native/addon.js';
import { StoreUnavailableError } from '../../src/subnet/kv.js';
import { runKvContract, EventCollector, sleep } from '../helpers/kv-contract.js';

const tmpRoots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'flannel-ts-localstore-'));
  tmpRoots.push(d);
  return d;
}
after(() => {
  for (const d of tmpRoots) rmSync(d, { recursive: true, force: true });
});

const MODULE_URL = new URL('../../src/subnet/local-store.js', import.meta.url).href;

/** Runs an ES module snippet in a child node process with `LocalStore` and `dir` in scope; resolves with its stdout. */
function child(
  dir: string,
  body: string,
): { done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>; kill: (s: NodeJS.Signals) => void; pid: number; printed: (line: string) => Promise<void> } {
  const code = `import { LocalStore } from ${JSON.stringify(MODULE_URL)};\nconst dir = ${JSON.stringify(dir)};\n${body}`;
  const p = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    p.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  // Resolves once the child printed `line` (or exited): start-up time varies a lot on a loaded machine.
  const printed = (line: string) =>
    new Promise<void>((resolve) => {
      const check = () => stdout.split('\n').includes(line) && resolve();
      p.stdout.on('data', check);
      p.on('exit', () => resolve());
      check();
    });
  return { done, kill: (s) => p.kill(s), pid: p.pid!, printed };
}

const sharedDir = tempDir();
runKvContract('LocalStore', async () => {
  const store = new LocalStore({ dir: sharedDir, pollIntervalMs: 50 });
  return { store, cleanup: () => store.close() };
});

describe('LocalStore specifics', () => {
  it('persists across instances and reports the description', async () => {
    const dir = tempDir();
    const a = new LocalStore({ dir });
    assert.equal(a.description, `local ${dir}`);
    await a.put('/cfg', '{"Network":"10.5.0.0/16"}');
    await a.close();
    const b = new LocalStore({ dir });
    assert.equal((await b.get('/cfg'))!.value, '{"Network":"10.5.0.0/16"}');
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
    assert.equal(state.revision, 1);
    await b.close();
  });

  it('watch from a revision older than the retained log calls onError', async () => {
    const dir = tempDir();
    const s = new LocalStore({ dir, maxEvents: 5, pollIntervalMs: 20 });
    for (let i = 0; i < 12; i++) await s.put('/p/k', `v${i}`);
    const c = new EventCollector();
    c.watcher = await s.watch('/p/', 2, c.handlers);
    await c.waitFor((x) => x.errors.length === 1, 2000, 'compaction error');
    assert.match(c.errors[0]!.message, /no longer retained/);
    assert.deepEqual(c.events, []);
    // From inside the retained window it works.
    const ok = new EventCollector();
    ok.watcher = await s.watch('/p/', 9, ok.handlers);
    await ok.waitFor((x) => x.events.length === 4, 2000, 'retained events');
    assert.deepEqual(ok.events.map((e) => e.revision), [9, 10, 11, 12]);
    await ok.watcher.close();
    await s.close();
  });

  it('watch from revision 0 starts at the current revision', async () => {
    const dir = tempDir();
    const s = new LocalStore({ dir, pollIntervalMs: 20 });
    await s.put('/p/old', 'x');
    const c = new EventCollector();
    c.watcher = await s.watch('/p/', 0, c.handlers);
    try {
      await s.put('/p/new', 'y');
      await c.waitFor((x) => x.events.length === 1, 2000, 'new event');
      await sleep(100);
      assert.deepEqual(c.events.map((e) => e.key), ['/p/new']);
    } finally {
      await s.close();
    }
  });

  it('expired keys are swept by a watcher even when nobody writes', async () => {
    const dir = tempDir();
    const writer = new LocalStore({ dir });
    const watcherStore = new LocalStore({ dir, pollIntervalMs: 50 });
    await writer.create('/p/ttl', 'v', 1);
    await writer.close();
    const c = new EventCollector();
    c.watcher = await watcherStore.watch('/p/', 1, c.handlers);
    await c.waitFor((x) => x.events.some((e) => e.type === 'delete'), 3000, 'expiry');
    // The deletion is durable: a fresh reader of the file sees it too.
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
    assert.deepEqual(state.keys, {});
    await watcherStore.close();
  });

  it('a lock holder killed with SIGKILL releases the lock at once (the kernel does), and the lock file stays', async () => {
    const dir = tempDir();
    const s = new LocalStore({ dir, lockTimeoutMs: 10_000 });
    await s.put('/k', 'v0');
    const addonUrl = new URL('../../src/native/addon.js', import.meta.url).href;
    const holder = child(
      dir,
      `import { openSync } from 'node:fs';\nconst { loadNative } = await import(${JSON.stringify(addonUrl)});\nconst fd = openSync(dir + '/lock', 'r+');\nif (!loadNative().tryLockExclusive(fd)) process.exit(3);\nconsole.log('locked');\nsetInterval(() => {}, 1000);`,
    );
    await holder.printed('locked');
    const writing = s.put('/k', 'v1');
    await sleep(300);
    assert.equal((await s.get('/k'))!.value, 'v0', 'waits while the holder lives');
    const t0 = Date.now();
    holder.kill('SIGKILL');
    await writing;
    assert.ok(Date.now() - t0 < 1000, `written ${Date.now() - t0} ms after the holder died`);
    assert.equal((await s.get('/k'))!.value, 'v1');
    assert.equal(existsSync(join(dir, 'lock')), true, 'the lock file is never removed');
    await s.close();
  });

  it('a live lock holder makes others wait, then time out with StoreUnavailableError; its close releases the lock', async () => {
    const dir = tempDir();
    const s = new LocalStore({ dir, lockTimeoutMs: 300 });
    await s.put('/k', 'v0');
    // Hold the kernel lock from another open file description, as another process would.
    const fd = openSync(join(dir, 'lock'), 'r+');
    assert.equal(loadNative().tryLockExclusive(fd), true);
    await assert.rejects(s.put('/k', 'v'), (err: Error) => err instanceof StoreUnavailableError && /lock/.test(err.message));
    assert.equal((await s.get('/k'))!.value, 'v0', 'nothing written without the lock');
    closeSync(fd);
    await s.put('/k', 'v');
    await s.close();
  });

  it('a deleted lock file cannot let two writers in: the holder re-checks the inode it locked', async () => {
    const dir = tempDir();
    const s = new LocalStore({ dir, lockTimeoutMs: 2000 });
    await s.put('/k', 'v0');
    const fd = openSync(join(dir, 'lock'), 'r+');
    assert.equal(loadNative().tryLockExclusive(fd), true);
    // Someone removes the held lock file: a new one appears, but the old holder still holds its inode.
    rmSync(join(dir, 'lock'));
    const writing = s.put('/k', 'v1');
    await sleep(100);
    closeSync(fd);
    await writing;
    assert.equal((await s.get('/k'))!.value, 'v1');
    await s.close();
  });

  it('writers in other pid namespaces and a writer whose fsync stalls: the lock stays exclusive, no write is lost, no revision repeats', async () => {
    const dir = tempDir();
    const init = new LocalStore({ dir });
    await init.put('/counter', '0');
    await init.close();
    const keys = 15;
    const increments = 8;
    // Each writer races create() on the same keys, then increments a counter with compare-and-swap.
    const body = (stallMs: number) => `import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
if (${stallMs} > 0) {
  // A slow disk: the first fsyncs of this writer hang while it holds the lock.
  const real = fs.fsyncSync;
  let n = 0;
  fs.fsyncSync = (fd) => { if (n++ < 2) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${stallMs}); return real(fd); };
  syncBuiltinESMExports();
}
const s = new LocalStore({ dir, lockTimeoutMs: 30000 });
const won = [], revs = [];
for (let i = 0; i < ${keys}; i++) {
  const r = await s.create('/keys/' + i, String(process.pid), 60);
  if (r !== null) { won.push(i); revs.push(r); }
}
let done = 0;
while (done < ${increments}) {
  const cur = await s.get('/counter');
  const r = await s.update('/counter', String(Number(cur.value) + 1), undefined, cur.modRevision);
  if (r !== null) { done++; revs.push(r); }
}
console.log(JSON.stringify({ won, revs }));
await s.close();`;
    const nsChild = (b: string) => {
      const code = `import { LocalStore } from ${JSON.stringify(MODULE_URL)};\nconst dir = ${JSON.stringify(dir)};\n${b}`;
      // Not pid 1 in its namespace (sh is), so its pid means nothing to the writers outside, and theirs nothing to it.
      const p = spawn('unshare', ['--pid', '--fork', 'sh', '-c', 'exec "$0" --input-type=module -e "$1"', process.execPath, code], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => p.on('exit', (code) => resolve({ code, stdout, stderr })));
    };
    const runs = await Promise.all([
      child(dir, body(1500)).done,
      child(dir, body(0)).done,
      nsChild(body(0)),
      nsChild(body(700)),
    ]);
    const results = runs.map((r) => {
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { won: number[]; revs: number[] };
    });
    const winners = new Map<number, number>();
    for (const r of results) for (const k of r.won) winners.set(k, (winners.get(k) ?? 0) + 1);
    assert.deepEqual([...winners.entries()].sort((a, b) => a[0] - b[0]), Array.from({ length: keys }, (_, i) => [i, 1]), 'every key created exactly once');
    const revs = results.flatMap((r) => r.revs);
    assert.equal(new Set(revs).size, revs.length, 'no revision used twice');
    const s = new LocalStore({ dir });
    const counter = (await s.get('/counter'))!;
    assert.equal(counter.value, String(increments * results.length), 'no lost increment');
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { revision: number; events: { revision: number }[] };
    assert.equal(state.revision, 1 + keys + increments * results.length, 'one revision per successful write');
    state.events.forEach((e, i) => assert.equal(e.revision, state.events[0]!.revision + i, 'revisions contiguous'));
    await s.close();
  });

  it('separate processes racing create() on one key: exactly one wins', async () => {
    const dir = tempDir();
    for (let round = 0; round < 3; round++) {
      const key = `/race/${round}`;
      const procs = Array.from({ length: 6 }, (_, i) =>
        child(dir, `const s = new LocalStore({ dir });\nconst r = await s.create(${JSON.stringify(key)}, 'proc${i}', 60);\nconsole.log(r ? 'won' : 'lost');\nawait s.close();`),
      );
      const results = await Promise.all(procs.map((p) => p.done));
      for (const r of results) assert.equal(r.code, 0, r.stderr);
      const winners = results.map((r, i) => [r.stdout.trim(), i] as const).filter(([o]) => o === 'won');
      assert.equal(winners.length, 1, `round ${round}: ${results.map((r) => r.stdout.trim())}`);
      const s = new LocalStore({ dir });
      assert.equal((await s.get(key))!.value, `proc${winners[0]![1]}`);
      await s.close();
    }
  });

  it('many writers in several processes: no lost update (get + conditional update loop)', async () => {
    const dir = tempDir();
    const init = new LocalStore({ dir });
    await init.put('/counter', '0');
    await init.close();
    const perProc = 25;
    const nProc = 4;
    const body = `const s = new LocalStore({ dir });
let done = 0, conflicts = 0;
while (done < ${perProc}) {
  const cur = await s.get('/counter');
  if (await s.update('/counter', String(Number(cur.value) + 1), undefined, cur.modRevision)) done++; else conflicts++;
}
console.log(conflicts);
await s.close();`;
    const results = await Promise.all(Array.from({ length: nProc }, () => child(dir, body).done));
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    const s = new LocalStore({ dir });
    const final = (await s.get('/counter'))!;
    assert.equal(final.value, String(perProc * nProc));
    assert.equal(final.modRevision, 1 + perProc * nProc, 'one revision per successful update');
    await s.close();
  });

  it('a writer killed with SIGKILL mid-stream never corrupts the store', async () => {
    const dir = tempDir();
    let lastSeen = 0;
    for (let round = 0; round < 6; round++) {
      const w = child(dir, `const s = new LocalStore({ dir });\nawait s.put('/k0', 'first');\nconsole.log('ready');\nfor (let i = 0; ; i++) await s.put('/k' + (i % 50), 'x'.repeat(200) + i);`);
      // Kill at a random moment of the write stream, after at least one write landed.
      await w.printed('ready');
      await sleep(20 + Math.random() * 200);
      w.kill('SIGKILL');
      const r = await w.done;
      assert.equal(r.signal, 'SIGKILL');
      // The file parses and the store keeps working, lock or no lock.
      JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
      const s = new LocalStore({ dir, lockTimeoutMs: 5000 });
      const l = await s.list('/');
      assert.ok(l.revision >= lastSeen, 'revision never goes back');
      assert.ok(l.revision > lastSeen, `round ${round}: the writer made progress`);
      lastSeen = l.revision;
      await s.put('/after-kill', String(round));
      assert.equal((await s.get('/after-kill'))!.value, String(round));
      lastSeen += 1;
      await s.close();
    }
    // Temp files of killed writers get cleaned up by the next lock holder.
    const leftovers = readdirSync(dir).filter((n) => n.startsWith('state.json.tmp.'));
    assert.deepEqual(leftovers, []);
  });
});

describe('flannelctl on the local store', () => {
  const bin = fileURLToPath(new URL('../../../bin/flannelctl', import.meta.url));
  const ctl = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

  it('put/get/get --prefix/del with exit codes', async () => {
    const dir = tempDir();
    const cfg = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}';
    let r = ctl('--local-store', dir, 'put', '/coreos.com/network/config', cfg);
    assert.equal(r.status, 0, r.stderr);
    // Visible to the store API (what flanneld uses).
    const s = new LocalStore({ dir });
    assert.equal((await s.get('/coreos.com/network/config'))!.value, cfg);
    await s.close();
    r = ctl(`--local-store=${dir}`, 'get', '/coreos.com/network/config');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, cfg + '\n');
    ctl('--local-store', dir, 'put', '/coreos.com/network/subnets/x', 'y');
    r = ctl('--local-store', dir, 'get', '--prefix', '/coreos.com/network/');
    assert.equal(r.stdout, `/coreos.com/network/config\n${cfg}\n/coreos.com/network/subnets/x\ny\n`);
    r = ctl('--local-store', dir, 'del', '/coreos.com/network/config');
    assert.equal(r.status, 0);
    r = ctl('--local-store', dir, 'get', '/coreos.com/network/config');
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'flannelctl: key not found: /coreos.com/network/config\n');
    r = ctl('--local-store', dir, 'frob', 'x');
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    r = ctl('--etcd-endpoints', 'http://127.0.0.1:1', '--etcd-username', 'u', '--etcd-password', 'hunter2', 'get', '/x');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^flannelctl: etcd http:\/\/127\.0\.0\.1:1: get failed/);
    assert.ok(!r.stderr.includes('hunter2'));
  });
});
