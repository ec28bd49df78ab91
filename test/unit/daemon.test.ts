import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from '../../src/daemon/daemon.js';
import { parseOptions } from '../../src/cli/options.js';
import type { Backend, BackendContext, BackendFactory } from '../../src/backend/types.js';
import type { BackendRegistry } from '../../src/backend/registry.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import type { Lease } from '../../src/subnet/types.js';
import { setLogSink } from '../../src/log.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));

/** A backend that records what the daemon tells it; `failAfterStart` makes it report that it cannot run. */
function recordingBackends(failAfterStart: Error | null) {
  const seen = { previous: [] as (Lease | null)[], ctx: null as BackendContext | null, stopped: 0 };
  const factory: BackendFactory = async (ctx) => {
    seen.ctx = ctx;
    const b: Backend = {
      type: 'recording',
      prepare: async (previous) => {
        seen.previous.push(previous);
        return { backendType: 'recording', backendData: { Key: 'stable' } };
      },
      mtu: () => 1400,
      start: async () => {
        if (failAfterStart) setTimeout(() => ctx.fatal(failAfterStart), 10);
      },
      handleEvents: async () => {},
      stop: async () => void seen.stopped++,
    };
    return b;
  };
  const registry: BackendRegistry = { types: () => ['recording'], factory: async () => factory };
  return { registry, seen };
}

async function withStore(fn: (dir: string) => Promise<void>) {
  const dir = mkdtempSync(join(tmpdir(), 'flannel-daemon-'));
  try {
    const store = new LocalStore({ dir: join(dir, 'store') });
    await store.put('/coreos.com/network/config', '{"Network":"10.5.0.0/16","Backend":{"Type":"recording"}}');
    await store.close();
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const optsFor = (dir: string) => parseOptions(['--local-store', join(dir, 'store'), '--iface', 'lo', '--subnet-file', join(dir, 'subnet.env')], {});

test('prepare gets the lease this host held before (null on a first start) and its attributes are published', async () => {
  await withStore(async (dir) => {
    const { registry, seen } = recordingBackends(null);
    const d1 = new Daemon(optsFor(dir), { backends: registry });
    await d1.start();
    const first = d1.lease!;
    assert.equal(seen.previous[0], null);
    assert.deepEqual(first.attrs.backendData, { Key: 'stable' });
    await d1.stop();
    const d2 = new Daemon(optsFor(dir), { backends: registry });
    await d2.start();
    const prev = seen.previous[1]!;
    assert.ok(prev, 'a restart sees its previous lease');
    assert.equal(prev.key, first.key);
    assert.equal(prev.attrs.publicIP, '127.0.0.1');
    assert.deepEqual(prev.attrs.backendData, { Key: 'stable' });
    assert.deepEqual(seen.ctx!.dataplane, { offload: true, rxCoalesce: true, uso: true }, 'default dataplane switches');
    await d2.stop();
  });
});

test('a backend that calls ctx.fatal after start makes the daemon report the failure and stop', async () => {
  await withStore(async (dir) => {
    const { registry, seen } = recordingBackends(new Error('device flannel.1 vanished'));
    const d = new Daemon(optsFor(dir), { backends: registry, dataplane: { offload: false, rxCoalesce: false } });
    lines.length = 0;
    await d.start();
    const err = await d.whenFailed();
    assert.match(err.message, /device flannel\.1 vanished/);
    assert.ok(lines.some((l) => l.startsWith('ERROR') && /backend cannot run, stopping/.test(l) && /vanished/.test(l)));
    assert.deepEqual(seen.ctx!.dataplane, { offload: false, rxCoalesce: false }, 'switches passed in, not read from the environment');
    await d.stop();
    assert.equal(seen.stopped, 1);
  });
});

test('a config naming a type the registry lacks is refused with the known types', async () => {
  await withStore(async (dir) => {
    const registry: BackendRegistry = { types: () => ['alloc'], factory: async () => assert.fail('no factory for an unknown type') };
    const d = new Daemon(optsFor(dir), { backends: registry });
    await assert.rejects(d.start(), /unknown backend type "recording" \(known: alloc\)/);
    await d.stop();
  });
});

test('our lease taken by another host: the daemon says who holds it and stops; the other host keeps it', async () => {
  await withStore(async (dir) => {
    const { registry, seen } = recordingBackends(null);
    const d = new Daemon(optsFor(dir), { backends: registry });
    await d.start();
    const key = `/coreos.com/network/${d.lease!.key}`;
    const store = new LocalStore({ dir: join(dir, 'store') });
    lines.length = 0;
    await store.delete(key);
    await store.create(key, '{"PublicIP":"192.0.2.77","PublicIPv6":null}', 3600);
    const err = await d.whenFailed();
    assert.match(err.message, /lost our lease 10\.5\.\d+\.0\/24: the key now belongs to PublicIP 192\.0\.2\.77/);
    assert.ok(lines.some((l) => l.startsWith('ERROR') && /our lease was taken over/.test(l)));
    await d.stop();
    assert.equal(seen.stopped, 1);
    assert.equal(JSON.parse((await store.get(key))!.value).PublicIP, '192.0.2.77', 'never overwritten by us');
    await store.close();
  });
});

test('a deleted reservation comes back as a lease with a TTL, and renewals follow it', async () => {
  await withStore(async (dir) => {
    const store = new LocalStore({ dir: join(dir, 'store') });
    const key = '/coreos.com/network/subnets/10.5.40.0-24';
    await store.put(key, '{"PublicIP":"127.0.0.1","PublicIPv6":null,"BackendType":"recording"}');
    const { registry } = recordingBackends(null);
    const d = new Daemon(optsFor(dir), { backends: registry, leaseTtlSeconds: 2 });
    await d.start();
    assert.equal(d.lease!.expiration, 0, 'the reservation is taken as it is');
    await store.delete(key);
    const deadline = Date.now() + 3000;
    while (!(await store.get(key)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const restored = await store.get(key);
    assert.ok(restored?.expiresAt, 'restored with a TTL');
    // Past two TTLs the key must still be there: renewals were scheduled for the restored lease.
    await new Promise((r) => setTimeout(r, 4500));
    const later = await store.get(key);
    assert.ok(later, 'still held after two TTLs');
    assert.ok(later.modRevision > restored.modRevision, 'renewed');
    await d.stop();
    await store.close();
  });
});

test('lease events are logged proportionately: a burst costs a few lines, not one per lease', async () => {
  await withStore(async (dir) => {
    const store = new LocalStore({ dir: join(dir, 'store') });
    // Subnets 10.5.10.0 .. 10.5.249.0; the one the daemon itself takes (if among them) is skipped.
    const create = async (i: number) =>
      (await store.create(`/coreos.com/network/subnets/10.5.${10 + i}.0-24`, `{"PublicIP":"198.18.0.${i}","PublicIPv6":null,"BackendType":"recording"}`, 3600)) !== null;
    let written = 0;
    for (let i = 0; i < 120; i++) if (await create(i)) written++;
    const handled: number[] = [];
    const { registry } = recordingBackends(null);
    const factory = await registry.factory('recording');
    const counting: BackendRegistry = {
      types: registry.types,
      factory: async () => async (ctx) => ({ ...(await factory(ctx)), handleEvents: async (evs) => void handled.push(evs.length) }),
    };
    lines.length = 0;
    const d = new Daemon(optsFor(dir), { backends: counting });
    try {
      await d.start();
      assert.equal(handled[0], written, 'the leases present at start reach the backend as one batch, before "running"');
      // As many again, one write at a time, while it runs.
      for (let i = 120; i < 240; i++) if (await create(i)) written++;
      const total = () => handled.reduce((a, b) => a + b, 0);
      const deadline = Date.now() + 5000;
      while (total() < written && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(total(), written);
      assert.ok(handled.length < written / 2, `${written} events coalesced into ${handled.length} batches`);
      const leaseLines = lines.filter((l) => l.startsWith('INFO') && /\[flanneld\] lease (added|removed|events)/.test(l));
      assert.ok(leaseLines.length <= 60, `${leaseLines.length} info lines for ${written} leases`);
    } finally {
      await d.stop();
      await store.close();
    }
  });
});
