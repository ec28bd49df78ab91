/**
 * The KvStore contract as node:test tests, run against every store
 * implementation. makeStore() must return a new client of the same backing
 * store on every call (same etcd, same directory), so tests can race two
 * clients; each test works under its own random key prefix, so the backend
 * can be shared by all tests.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { KvEvent, KvStore, KvWatcher } from '../../src/subnet/kv.js';

export interface StoreHandle {
  store: KvStore;
  cleanup: () => Promise<void>;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Collects watch events; waitFor() resolves once a predicate over all events holds. */
export class EventCollector {
  events: KvEvent[] = [];
  errors: Error[] = [];
  watcher: KvWatcher | null = null;
  readonly handlers = {
    onEvents: (evs: KvEvent[]) => {
      this.events.push(...evs);
    },
    onError: (err: Error) => {
      this.errors.push(err);
    },
  };

  async waitFor(pred: (c: EventCollector) => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this)) {
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; events: ${JSON.stringify(this.events)} errors: ${this.errors.map((e) => e.message).join('; ')}`);
      }
      await sleep(25);
    }
  }
}

function uniquePrefix(): string {
  return `/kvtest/${randomBytes(5).toString('hex')}/`;
}

export function runKvContract(name: string, makeStore: () => Promise<StoreHandle>): void {
  describe(`KvStore contract: ${name}`, () => {
    const withStores = async (n: number, fn: (stores: KvStore[], prefix: string) => Promise<void>) => {
      const handles: StoreHandle[] = [];
      try {
        for (let i = 0; i < n; i++) handles.push(await makeStore());
        await fn(
          handles.map((h) => h.store),
          uniquePrefix(),
        );
      } finally {
        for (const h of handles) await h.cleanup();
      }
    };

    it('put/get/delete and list with revision', async () => {
      await withStores(1, async ([s], p) => {
        assert.equal(await s!.get(`${p}missing`), null);
        await s!.put(`${p}b`, 'B');
        await s!.put(`${p}a`, 'A');
        await s!.put(`${p.slice(0, -1)}x`, 'sibling outside the prefix');
        const a = await s!.get(`${p}a`);
        assert.ok(a);
        assert.equal(a.value, 'A');
        assert.equal(a.expiresAt, undefined, 'put() has no TTL');
        const l = await s!.list(p);
        assert.deepEqual(l.entries.map((e) => [e.key, e.value]), [[`${p}a`, 'A'], [`${p}b`, 'B']]);
        assert.ok(l.revision >= a.modRevision);
        const b = l.entries.find((e) => e.key === `${p}b`)!;
        assert.ok(b.modRevision < a.modRevision, 'modRevision follows write order');
        await s!.delete(`${p}a`);
        await s!.delete(`${p}never-existed`);
        assert.equal(await s!.get(`${p}a`), null);
        const l2 = await s!.list(p);
        assert.deepEqual(l2.entries.map((e) => e.key), [`${p}b`]);
        assert.ok(l2.revision > l.revision);
        await s!.delete(`${p.slice(0, -1)}x`);
      });
    });

    it('create succeeds once, then reports the conflict without touching the value', async () => {
      await withStores(1, async ([s], p) => {
        const before = Date.now();
        const rev = await s!.create(`${p}k`, 'first', 30);
        const e1 = await s!.get(`${p}k`);
        assert.equal(rev, e1!.modRevision, 'create returns the revision of its write');
        assert.equal(e1!.createRevision, e1!.modRevision);
        assert.equal(await s!.create(`${p}k`, 'second', 30), null);
        const e2 = await s!.get(`${p}k`);
        assert.equal(e2!.value, 'first');
        assert.equal(e2!.modRevision, e1!.modRevision);
        assert.ok(e1!.expiresAt !== undefined, 'a TTL key reports its expiry');
        assert.ok(e1!.expiresAt! >= before + 28_000 && e1!.expiresAt! <= Date.now() + 31_000, `expiresAt ${e1!.expiresAt! - before} ms after create`);
        assert.equal(typeof (await s!.create(`${p}nottl`, 'v')), 'number');
        assert.equal((await s!.get(`${p}nottl`))!.expiresAt, undefined);
        // Listings say which keys expire even when they leave the time out.
        const listed = new Map((await s!.list(p)).entries.map((e) => [e.key, e.expires]));
        assert.deepEqual([listed.get(`${p}k`), listed.get(`${p}nottl`)], [true, false]);
      });
    });

    it('concurrent create from two clients: exactly one wins', async () => {
      await withStores(2, async ([s1, s2], p) => {
        const attempts = Array.from({ length: 10 }, (_, i) => (i % 2 ? s1! : s2!).create(`${p}race`, `v${i}`, 30));
        const results = await Promise.all(attempts);
        assert.equal(results.filter((r) => r !== null).length, 1, `results ${results}`);
        const winner = results.findIndex((r) => r !== null);
        assert.equal((await s2!.get(`${p}race`))!.value, `v${winner}`);
      });
    });

    it('update is conditional on modRevision; racing updates: one wins', async () => {
      await withStores(2, async ([s1, s2], p) => {
        const k = `${p}lease`;
        assert.equal(typeof (await s1!.create(k, 'v0', 30)), 'number');
        const cur = (await s1!.get(k))!;
        const [r1, r2] = await Promise.all([s1!.update(k, 'from-1', 30, cur.modRevision), s2!.update(k, 'from-2', 30, cur.modRevision)]);
        assert.equal(Number(r1 !== null) + Number(r2 !== null), 1, `exactly one update wins (${r1}, ${r2})`);
        const after = (await s1!.get(k))!;
        assert.equal(after.value, r1 !== null ? 'from-1' : 'from-2');
        assert.equal(after.modRevision, r1 ?? r2, 'update returns the revision of its write');
        assert.equal(after.createRevision, cur.createRevision, 'an update keeps the createRevision');
        assert.ok(after.modRevision > cur.modRevision);
        // The loser's view is stale now.
        assert.equal(await s2!.update(k, 'stale', 30, cur.modRevision), null);
        assert.equal((await s1!.get(k))!.value, after.value);
        // Unconditional update always succeeds.
        assert.equal(typeof (await s2!.update(k, 'forced', 30)), 'number');
        assert.equal((await s1!.get(k))!.value, 'forced');
        // A conditional update of an absent key fails (absent compares as revision 0).
        assert.equal(await s1!.update(`${p}absent`, 'x', 30, 5), null);
        assert.equal(await s1!.get(`${p}absent`), null);
      });
    });

    it('update renews the TTL', async () => {
      await withStores(1, async ([s], p) => {
        const k = `${p}renew`;
        await s!.create(k, 'v', 5);
        const e1 = (await s!.get(k))!;
        await sleep(1100);
        assert.equal(typeof (await s!.update(k, 'v', 60, e1.modRevision)), 'number');
        const e2 = (await s!.get(k))!;
        assert.ok(e2.expiresAt! > e1.expiresAt! + 50_000, `expiry moved from ${e1.expiresAt} to ${e2.expiresAt}`);
        // Update without TTL drops the expiry.
        assert.equal(typeof (await s!.update(k, 'v', undefined, e2.modRevision)), 'number');
        assert.equal((await s!.get(k))!.expiresAt, undefined);
      });
    });

    it('an expired TTL key disappears and produces a delete event', async () => {
      await withStores(1, async ([s], p) => {
        const c = new EventCollector();
        const start = await s!.list(p);
        c.watcher = await s!.watch(p, start.revision + 1, c.handlers);
        try {
          assert.equal(typeof (await s!.create(`${p}short`, 'v', 1)), 'number');
          await s!.put(`${p}keep`, 'v');
          // etcd rounds TTLs up to its minimum (~2 s) and checks leases every 500 ms.
          await c.waitFor((x) => x.events.some((e) => e.type === 'delete' && e.key === `${p}short`), 8000, 'expiry delete event');
          assert.deepEqual(c.events.map((e) => [e.type, e.key]), [['put', `${p}short`], ['put', `${p}keep`], ['delete', `${p}short`]]);
          assert.equal(await s!.get(`${p}short`), null);
          assert.deepEqual((await s!.list(p)).entries.map((e) => e.key), [`${p}keep`]);
          assert.deepEqual(c.errors, []);
        } finally {
          await c.watcher.close();
        }
      });
    });

    it('watch from list revision + 1 misses nothing written between list and watch', async () => {
      await withStores(2, async ([reader, writer], p) => {
        await writer!.put(`${p}pre`, 'before list');
        const l = await reader!.list(p);
        for (let i = 0; i < 5; i++) await writer!.put(`${p}k${i}`, `v${i}`); // between list and watch
        const c = new EventCollector();
        c.watcher = await reader!.watch(p, l.revision + 1, c.handlers);
        try {
          for (let i = 5; i < 10; i++) await writer!.put(`${p}k${i}`, `v${i}`);
          await writer!.delete(`${p}k0`);
          await c.waitFor((x) => x.events.length >= 11, 5000, '11 events');
          await sleep(200);
          assert.equal(c.events.length, 11, 'no duplicates, nothing from before the list');
          assert.deepEqual(
            c.events.map((e) => [e.type, e.key]),
            [...Array.from({ length: 10 }, (_, i) => ['put', `${p}k${i}`]), ['delete', `${p}k0`]],
          );
          for (let i = 1; i < c.events.length; i++) assert.ok(c.events[i]!.revision > c.events[i - 1]!.revision, 'revisions increase');
          assert.ok(c.events[0]!.revision === l.revision + 1 || c.events[0]!.revision > l.revision);
        } finally {
          await c.watcher.close();
        }
      });
    });

    it('watch delivers events in order, only under the prefix, and can replay from an old revision', async () => {
      await withStores(2, async ([w, s], p) => {
        const c = new EventCollector();
        const first = (await s!.list(p)).revision + 1;
        c.watcher = await w!.watch(p, first, c.handlers);
        const outside = `${p.slice(0, -1)}-outside`;
        try {
          const ops: Array<() => Promise<unknown>> = [];
          for (let i = 0; i < 20; i++) {
            ops.push(() => s!.put(`${p}same`, `v${i}`));
            if (i % 5 === 4) ops.push(() => s!.delete(`${p}same`));
            if (i % 7 === 0) ops.push(() => s!.put(outside, 'ignored'));
          }
          for (const op of ops) await op();
          await c.waitFor((x) => x.events.length >= 24, 5000, '24 events');
          const expected: Array<[string, string | undefined]> = [];
          for (let i = 0; i < 20; i++) {
            expected.push(['put', `v${i}`]);
            if (i % 5 === 4) expected.push(['delete', undefined]);
          }
          assert.deepEqual(
            c.events.map((e) => [e.type, e.type === 'put' ? e.value : undefined]),
            expected,
          );
          assert.ok(c.events.every((e) => e.key === `${p}same`), 'nothing from outside the prefix');
          for (let i = 1; i < c.events.length; i++) assert.ok(c.events[i]!.revision > c.events[i - 1]!.revision);

          // A second watcher from an old revision replays the same history.
          const replay = new EventCollector();
          replay.watcher = await w!.watch(p, c.events[10]!.revision, replay.handlers);
          try {
            await replay.waitFor((x) => x.events.length >= c.events.length - 10, 5000, 'replayed events');
            assert.deepEqual(replay.events, c.events.slice(10));
          } finally {
            await replay.watcher.close();
          }
        } finally {
          await c.watcher.close();
          await s!.delete(outside);
        }
      });
    });

    it('a closed watcher delivers nothing more', async () => {
      await withStores(1, async ([s], p) => {
        const c = new EventCollector();
        c.watcher = await s!.watch(p, (await s!.list(p)).revision + 1, c.handlers);
        await s!.put(`${p}a`, '1');
        await c.waitFor((x) => x.events.length === 1, 5000, 'first event');
        await c.watcher.close();
        await s!.put(`${p}a`, '2');
        await sleep(400);
        assert.equal(c.events.length, 1);
        assert.deepEqual(c.errors, []);
      });
    });
  });
}
