import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { createRouteTableBuffer, RouteTableReader, RouteTableWriter, SourceCheck, type RouteTableState } from '../../src/dataplane/routes.js';
import { formatIP4, parseIP4 } from '../../src/net/ipaddr.js';

const state = (routes: [string, number, string][]): RouteTableState => ({
  ownNet: parseIP4('10.5.1.0'),
  ownPrefixLen: 24,
  network: parseIP4('10.5.0.0'),
  networkPrefixLen: 16,
  icmpSource: parseIP4('10.5.0.0'),
  routes: routes.map(([net, prefixLen, peer]) => ({ net: parseIP4(net), prefixLen, peer: parseIP4(peer), port: 8285 })),
});

test('a reader sees updates only after the generation moves, and looks routes up', () => {
  const sab = createRouteTableBuffer(16);
  const w = new RouteTableWriter(sab);
  w.publish(state([['10.5.2.0', 24, '192.0.2.2']]));
  const r = new RouteTableReader(sab);
  assert.equal(r.generation, w.generation);
  assert.equal(r.generation % 2, 0);
  let i = r.lookup(parseIP4('10.5.2.77'));
  assert.equal(formatIP4(r.peers[i]!), '192.0.2.2');
  assert.equal(r.ports[i], 8285);
  assert.equal(r.lookup(parseIP4('10.5.3.1')), -1);
  assert.equal(r.refresh(), false, 'nothing changed');

  w.publish(state([['10.5.2.0', 24, '192.0.2.7'], ['10.5.3.0', 24, '192.0.2.3']]));
  // Until refresh() the reader keeps its snapshot: a batch sees one consistent table.
  i = r.lookup(parseIP4('10.5.2.77'));
  assert.equal(formatIP4(r.peers[i]!), '192.0.2.2');
  assert.equal(r.refresh(), true);
  assert.equal(formatIP4(r.peers[r.lookup(parseIP4('10.5.2.77'))]!), '192.0.2.7');
  assert.equal(formatIP4(r.peers[r.lookup(parseIP4('10.5.3.1'))]!), '192.0.2.3');

  w.publish(state([['10.5.3.0', 24, '192.0.2.3']]));
  r.refresh();
  assert.equal(r.lookup(parseIP4('10.5.2.77')), -1, 'removed');
});

test('longest prefix wins across mixed prefix lengths; high addresses work', () => {
  const sab = createRouteTableBuffer(16);
  const w = new RouteTableWriter(sab);
  w.publish(state([['10.5.0.0', 16, '192.0.2.1'], ['10.5.7.0', 24, '192.0.2.2'], ['200.1.2.0', 28, '192.0.2.3']]));
  const r = new RouteTableReader(sab);
  assert.equal(formatIP4(r.peers[r.lookup(parseIP4('10.5.7.1'))]!), '192.0.2.2');
  assert.equal(formatIP4(r.peers[r.lookup(parseIP4('10.5.8.1'))]!), '192.0.2.1');
  assert.equal(formatIP4(r.peers[r.lookup(parseIP4('200.1.2.15'))]!), '192.0.2.3');
  assert.equal(r.lookup(parseIP4('200.1.2.16')), -1);
});

test('own subnet and network membership', () => {
  const sab = createRouteTableBuffer(4);
  new RouteTableWriter(sab).publish(state([]));
  const r = new RouteTableReader(sab);
  assert.ok(r.isOwn(parseIP4('10.5.1.200')));
  assert.ok(!r.isOwn(parseIP4('10.5.2.1')));
  assert.ok(r.inNetwork(parseIP4('10.5.200.1')));
  assert.ok(!r.inNetwork(parseIP4('10.6.0.1')));
  assert.equal(formatIP4(r.icmpSource), '10.5.0.0');
});

test('source check: allowed, spoofed, unknown peer; a peer may own several subnets', () => {
  const sab = createRouteTableBuffer(16);
  new RouteTableWriter(sab).publish(state([['10.5.2.0', 24, '192.0.2.2'], ['10.5.3.0', 24, '192.0.2.3'], ['10.5.4.0', 24, '192.0.2.2']]));
  const r = new RouteTableReader(sab);
  assert.equal(r.checkSource(parseIP4('192.0.2.2'), parseIP4('10.5.2.9')), SourceCheck.Allowed);
  assert.equal(r.checkSource(parseIP4('192.0.2.2'), parseIP4('10.5.4.9')), SourceCheck.Allowed);
  assert.equal(r.checkSource(parseIP4('192.0.2.2'), parseIP4('10.5.3.9')), SourceCheck.Spoofed);
  assert.equal(r.checkSource(parseIP4('192.0.2.3'), parseIP4('10.5.3.9')), SourceCheck.Allowed);
  assert.equal(r.checkSource(parseIP4('192.0.2.99'), parseIP4('10.5.3.9')), SourceCheck.UnknownPeer);
});

test('capacity is enforced and a big table indexes correctly', () => {
  const sab = createRouteTableBuffer(1000);
  const w = new RouteTableWriter(sab);
  const routes: [string, number, string][] = [];
  for (let i = 0; i < 1000; i++) routes.push([`10.${100 + (i >> 8)}.${i & 255}.0`, 24, `192.0.${i >> 8}.${i & 255}`]);
  w.publish(state(routes));
  const r = new RouteTableReader(sab);
  for (let i = 0; i < 1000; i++) {
    const idx = r.lookup(parseIP4(`10.${100 + (i >> 8)}.${i & 255}.42`));
    assert.equal(formatIP4(r.peers[idx]!), `192.0.${i >> 8}.${i & 255}`);
  }
  assert.throws(() => w.publish(state([...routes, ['10.99.0.0', 24, '192.0.2.1']])), /route table full/);
});

test('a reader in another thread never sees a torn table while the writer keeps publishing', async () => {
  const sab = createRouteTableBuffer(64);
  const w = new RouteTableWriter(sab);
  // Every table maps 10.5.k.0/24 for k < 64 to the same peer 192.0.2.<gen-tag>: a torn read would mix tags.
  const publishTag = (tag: number) =>
    w.publish(state(Array.from({ length: 64 }, (_, k) => [`10.5.${k + 2}.0`, 24, `192.0.2.${tag}`] as [string, number, string])));
  publishTag(0);
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.mod).then(({ RouteTableReader }) => {
      const r = new RouteTableReader(workerData.sab);
      let refreshes = 0, bad = 0;
      const end = Date.now() + 300;
      while (Date.now() < end) {
        if (!r.refresh()) continue;
        refreshes++;
        const tag = r.peers[0] & 255;
        for (let i = 0; i < r.count; i++) if ((r.peers[i] & 255) !== tag) bad++;
        if (r.count !== 64) bad++;
      }
      parentPort.postMessage({ refreshes, bad });
    });`;
  const mod = new URL('../../src/dataplane/routes.js', import.meta.url).href;
  const worker = new Worker(code, { eval: true, workerData: { sab, mod } });
  const result = new Promise<{ refreshes: number; bad: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  let tag = 1;
  const timer = setInterval(() => {
    for (let k = 0; k < 50; k++) publishTag((tag = (tag % 250) + 1));
  }, 1);
  const { refreshes, bad } = await result;
  clearInterval(timer);
  await worker.terminate();
  assert.equal(bad, 0);
  assert.ok(refreshes > 0, 'the reader saw updates');
});
