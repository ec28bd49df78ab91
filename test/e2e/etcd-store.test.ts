import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EtcdStore } from '../../src/subnet/etcd-store.js';
import { StoreUnavailableError } from '../../src/subnet/kv.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { runKvContract, EventCollector } from '../helpers/kv-contract.js';

function storeFor(etcd: TestEtcd, extra: Partial<ConstructorParameters<typeof EtcdStore>[0]> = {}): EtcdStore {
  return new EtcdStore({ endpoints: [etcd.endpoint], caFile: etcd.caFile, certFile: etcd.certFile, keyFile: etcd.keyFile, ...extra });
}

// One etcd per flavour, shared by the contract tests (each works under its
// own random prefix). Started lazily from the first makeStore() call because
// runKvContract registers its tests synchronously.
function lazyEtcd(tls: boolean): () => Promise<TestEtcd> {
  let p: Promise<TestEtcd> | null = null;
  after(async () => {
    if (p) await (await p).cleanup();
  });
  return () => (p ??= startEtcd({ tls }));
}

const plain = lazyEtcd(false);
runKvContract('EtcdStore (http)', async () => {
  const store = storeFor(await plain());
  return { store, cleanup: () => store.close() };
});

const tls = lazyEtcd(true);
runKvContract('EtcdStore (TLS, client certificates)', async () => {
  const store = storeFor(await tls());
  return { store, cleanup: () => store.close() };
});

describe('EtcdStore configuration', () => {
  it('describes itself without credentials', () => {
    const s = new EtcdStore({ endpoints: ['https://127.0.0.1:2379', 'https://10.0.0.2:2379'], username: 'flannel', password: 's3cret-pw' });
    assert.equal(s.description, 'etcd https://127.0.0.1:2379,https://10.0.0.2:2379');
    void s.close();
  });

  it('rejects unreadable TLS files with a clear message', () => {
    assert.throws(() => new EtcdStore({ endpoints: ['https://127.0.0.1:2379'], caFile: '/nonexistent/ca.pem' }), /cannot read etcd CA file \/nonexistent\/ca\.pem: ENOENT/);
    assert.throws(() => new EtcdStore({ endpoints: ['https://127.0.0.1:2379'], certFile: '/x.crt' }), /certfile and --etcd-keyfile must be given together/);
    assert.throws(() => new EtcdStore({ endpoints: ['127.0.0.1:2379'] }), /invalid endpoint/);
    assert.throws(() => new EtcdStore({ endpoints: ['http://a:1', 'https://b:2'] }), /mix http and https/);
  });

  it('TLS etcd refuses a client without a certificate, as StoreUnavailableError', async () => {
    const etcd = await tls();
    const s = new EtcdStore({ endpoints: [etcd.endpoint], caFile: etcd.caFile, dialTimeoutMs: 2000 });
    try {
      await assert.rejects(s.get('/x'), (err: Error) => err instanceof StoreUnavailableError && err.message.includes(etcd.endpoint));
    } finally {
      await s.close();
    }
  });
});

describe('flannelctl on etcd', () => {
  it('writes and reads through TLS etcd', async () => {
    const etcd = await tls();
    const bin = fileURLToPath(new URL('../../../bin/flannelctl', import.meta.url));
    const conn = ['--etcd-endpoints', etcd.endpoint, '--etcd-cafile', etcd.caFile!, '--etcd-certfile', etcd.certFile!, '--etcd-keyfile', etcd.keyFile!];
    let r = spawnSync(process.execPath, [bin, ...conn, 'put', '/ctl/config', '{"Network":"10.6.0.0/16"}'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    r = spawnSync(process.execPath, [bin, ...conn, 'get', '/ctl/config'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '{"Network":"10.6.0.0/16"}\n');
  });
});

describe('EtcdStore outages', () => {
  let etcd: TestEtcd;
  before(async () => {
    etcd = await startEtcd();
  });
  after(async () => {
    await etcd.cleanup();
  });

  it('a watch reports onError when etcd dies', async () => {
    const s = storeFor(etcd);
    try {
      const c = new EventCollector();
      c.watcher = await s.watch('/w/', (await s.list('/w/')).revision + 1, c.handlers);
      await s.put('/w/a', '1');
      await c.waitFor((x) => x.events.length === 1, 5000, 'first event');
      await etcd.kill();
      await c.waitFor((x) => x.errors.length === 1, 5000, 'watch error');
      assert.ok(c.errors[0] instanceof StoreUnavailableError, String(c.errors[0]));
      assert.ok(c.errors[0]!.message.includes(etcd.endpoint));
    } finally {
      if (!(await isUp(etcd))) await etcd.start();
      await s.close();
    }
  });

  it('calls fail within a bounded time while etcd is down, and work again after a restart', async () => {
    const s = storeFor(etcd, { dialTimeoutMs: 1500, password: 'pw-never-shown', username: 'nobody' });
    const s2 = storeFor(etcd, { dialTimeoutMs: 1500 });
    try {
      await s2.put('/o/k', 'v1');
      await etcd.stop();
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['get', () => s2.get('/o/k')],
        ['list', () => s2.list('/o/')],
        ['create', () => s2.create('/o/new', 'v', 5)],
        ['update', () => s2.update('/o/k', 'v2', 5, 1)],
        ['put', () => s2.put('/o/k', 'v3')],
        ['delete', () => s2.delete('/o/k')],
        ['watch', () => s2.watch('/o/', 1, { onEvents: () => undefined, onError: () => undefined })],
        ['get (with auth)', () => s.get('/o/k')],
      ];
      for (const [name, call] of calls) {
        const t0 = Date.now();
        await assert.rejects(call(), (err: Error) => {
          assert.ok(err instanceof StoreUnavailableError, `${name}: ${err}`);
          assert.ok(err.message.includes(etcd.endpoint), `${name}: message names the endpoint: ${err.message}`);
          assert.ok(!err.message.includes('pw-never-shown'), 'password never in messages');
          return true;
        });
        assert.ok(Date.now() - t0 < 4000, `${name} failed after ${Date.now() - t0} ms`);
      }
      await etcd.start();
      // The client reconnects on the next call (no circuit breaker delay).
      assert.equal((await s2.get('/o/k'))!.value, 'v1');
      assert.equal(typeof (await s2.create('/o/new', 'v', 5)), 'number');
      const c = new EventCollector();
      c.watcher = await s2.watch('/o/', 1, c.handlers);
      await c.waitFor((x) => x.events.length >= 2, 5000, 'history after restart');
      await c.watcher.close();
    } finally {
      await s.close();
      await s2.close();
    }
  });

  it('a store created while etcd is down works once it is up', async () => {
    await etcd.stop();
    const s = storeFor(etcd, { dialTimeoutMs: 1000 });
    try {
      await assert.rejects(s.put('/late/k', 'v'), StoreUnavailableError);
      await etcd.start();
      await s.put('/late/k', 'v');
      assert.equal((await s.get('/late/k'))!.value, 'v');
    } finally {
      await s.close();
    }
  });

  it('a watch from a compacted revision reports onError', async () => {
    const s = storeFor(etcd);
    try {
      for (let i = 0; i < 5; i++) await s.put('/c/k', String(i));
      const rev = (await s.list('/c/')).revision;
      // Compaction is an admin operation, not part of the store API.
      const { Etcd3 } = await import('etcd3');
      const admin = new Etcd3({ hosts: etcd.endpoint });
      await admin.kv.compact({ revision: rev, physical: true } as never);
      admin.close();
      const c = new EventCollector();
      let w;
      try {
        w = await s.watch('/c/', rev - 2, c.handlers);
        await c.waitFor((x) => x.errors.length === 1, 5000, 'compaction error');
      } catch (err) {
        // Also acceptable: the watch is refused outright.
        assert.ok(err instanceof StoreUnavailableError, String(err));
      }
      if (c.errors.length) assert.match(c.errors[0]!.message, /compacted/);
      await w?.close();
    } finally {
      await s.close();
    }
  });
});

async function isUp(etcd: TestEtcd): Promise<boolean> {
  const s = new EtcdStore({ endpoints: [etcd.endpoint], caFile: etcd.caFile, certFile: etcd.certFile, keyFile: etcd.keyFile, dialTimeoutMs: 500 });
  try {
    await s.get('/');
    return true;
  } catch {
    return false;
  } finally {
    await s.close();
  }
}
