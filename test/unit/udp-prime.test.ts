/**
 * Priming (dataplane/prime.ts): the corpus reaches every branch it is
 * there for, through the real addon on loopback sockets, and leaves
 * nothing behind: the worker's own counters untouched, no fd open. Off,
 * or for IPv6 routing, it does nothing; without a working loopback it
 * gives up at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../../src/native/addon.js';
import { primeMovers } from '../../src/dataplane/prime.js';
import { createCounterBuffer, counterRegion, REGION_RX, REGION_TX, UdpCounter } from '../../src/dataplane/counters.js';
import { createRouteTableBuffer } from '../../src/dataplane/routes.js';
import type { WorkerConfig } from '../../src/dataplane/workers.js';

function config(role: 'tx' | 'rx', over: Partial<WorkerConfig> = {}): WorkerConfig {
  return {
    role,
    queue: 0,
    tunFd: -1,
    udpFd: -1,
    routes: createRouteTableBuffer(4),
    ipv4Pods: true,
    counters: createCounterBuffer(),
    control: new SharedArrayBuffer(4),
    slotSize: 2048,
    batchSize: 64,
    pathMtu: 1472,
    pollMs: 100,
    offload: true,
    rxCoalesce: true,
    udpGro: true,
    uso: true,
    tunReadLocks: new SharedArrayBuffer(8),
    replyFastPath: true,
    prime: true,
    nativeHop: true,
    ...over,
  };
}

const openFds = () => readdirSync('/proc/self/fd').length;
const named = (c: Float64Array, names: (keyof typeof UdpCounter)[]) => Object.fromEntries(names.map((n) => [n, c[UdpCounter[n]]!]));

test('tx: echo requests, ACKs and UDP with partial checksums, TCP and UDP super-packets, no route, TTL 1, too big, not IPv4, a failing send', () => {
  const addon = loadNative();
  const cfg = config('tx');
  const fds = openFds();
  const seen = primeMovers(addon, cfg);
  assert.ok(seen, 'primed');
  const counts = named(seen, ['sent', 'txNoRoute', 'txTtl', 'txTooBig', 'txNotIPv4', 'txUdpSend', 'tunSuperPackets', 'tunUdpSuperPackets', 'icmpNetUnreachable']);
  for (const [name, n] of Object.entries(counts)) assert.ok(n > 0, `${name} never happened: ${JSON.stringify(counts)}`);
  // Super-packets beyond one batch: their segments waited for the next read.
  assert.ok(seen[UdpCounter.tunSegments]! > seen[UdpCounter.tunSuperPackets]! * 8);
  assert.ok(counterRegion(cfg.counters, REGION_TX).every((v) => v === 0), "the worker's own counters are untouched");
  assert.equal(openFds(), fds, 'no fd left open');
});

test('rx: echo replies, GRO runs glued into TCP super-packets, lone ACKs, UDP, spoofed, not ours, malformed; replies sent by the rx mover', () => {
  const addon = loadNative();
  const cfg = config('rx');
  const fds = openFds();
  const seen = primeMovers(addon, cfg);
  assert.ok(seen, 'primed');
  const counts = named(seen, ['received', 'rxGroSuperDatagrams', 'rxSuperPackets', 'rxCoalescedSegments', 'rxSpoofed', 'rxNotLocal', 'rxMalformed', 'txByRxWorker']);
  for (const [name, n] of Object.entries(counts)) assert.ok(n > 0, `${name} never happened: ${JSON.stringify(counts)}`);
  assert.ok(counterRegion(cfg.counters, REGION_RX).every((v) => v === 0), "the worker's own counters are untouched");
  assert.equal(openFds(), fds, 'no fd left open');
});

test('the plain path (no offloads) primes too; off, or for IPv6 routing, nothing runs', () => {
  const addon = loadNative();
  const plain = primeMovers(addon, config('tx', { offload: false, rxCoalesce: false, udpGro: false, uso: false }));
  assert.ok(plain && plain[UdpCounter.sent]! > 0);
  assert.equal(primeMovers(addon, config('tx', { prime: false })), null);
  assert.equal(primeMovers(addon, config('rx', { routes6: new SharedArrayBuffer(64) })), null);
});

test('without a working loopback (lo down in a fresh namespace) it gives up at once and leaves no fd', () => {
  const ns = `ftprime${process.pid}`;
  assert.equal(spawnSync('ip', ['netns', 'add', ns]).status, 0);
  try {
    const prime = new URL('../../src/dataplane/prime.js', import.meta.url).href;
    const native = new URL('../../src/native/addon.js', import.meta.url).href;
    const counters = new URL('../../src/dataplane/counters.js', import.meta.url).href;
    const routes = new URL('../../src/dataplane/routes.js', import.meta.url).href;
    const script = `
      const { primeMovers } = await import(${JSON.stringify(prime)});
      const { loadNative } = await import(${JSON.stringify(native)});
      const { createCounterBuffer } = await import(${JSON.stringify(counters)});
      const { createRouteTableBuffer } = await import(${JSON.stringify(routes)});
      const { readdirSync } = await import('node:fs');
      const fds = readdirSync('/proc/self/fd').length;
      const t0 = Date.now();
      const r = primeMovers(loadNative(), { role: 'rx', queue: 0, tunFd: -1, udpFd: -1, routes: createRouteTableBuffer(4), ipv4Pods: true,
        counters: createCounterBuffer(), control: new SharedArrayBuffer(4), slotSize: 2048, batchSize: 64, pathMtu: 1472, pollMs: 100,
        offload: true, rxCoalesce: true, udpGro: true, uso: true, tunReadLocks: new SharedArrayBuffer(8), replyFastPath: true, prime: true });
      console.log(JSON.stringify({ primed: r !== null, leaked: readdirSync('/proc/self/fd').length - fds, ms: Date.now() - t0 }));`;
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', cwd: fileURLToPath(new URL('.', import.meta.url)) });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { primed: boolean; leaked: number; ms: number };
    assert.equal(out.primed, false);
    assert.equal(out.leaked, 0);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
});
