import { Worker, isMainThread } from 'node:worker_threads';
import { forwardFromTun, IcmpLimiter, ICMP_SLOT } from '../dist/src/dataplane/pipeline.js';
import { PacketBatch } from '../dist/src/tun/packet-batch.js';
import { createRouteTableBuffer, RouteTableReader, RouteTableWriter } from '../dist/src/dataplane/routes.js';
import { counterRegion, createCounterBuffer, REGION_TX } from '../dist/src/dataplane/counters.js';
import { parseIP4 } from '../dist/src/net/ipaddr.js';
import { makePacket } from '../dist/test/unit/packet-fixtures.js';
if (isMainThread) { new Worker(new URL(import.meta.url)); } else {
  const sab = createRouteTableBuffer(16);
  new RouteTableWriter(sab).publish({ ownNet: parseIP4('10.5.1.0'), ownPrefixLen: 24, network: parseIP4('10.5.0.0'), networkPrefixLen: 16, icmpSource: parseIP4('10.5.0.0'),
    routes: [{ net: parseIP4('10.5.2.0'), prefixLen: 24, peer: parseIP4('192.0.2.2'), port: 8285 }] });
  const routes = new RouteTableReader(sab);
  const counters = counterRegion(createCounterBuffer(), REGION_TX);
  const batch = new PacketBatch(64, 2048); const icmp = new PacketBatch(64, ICMP_SLOT); const lim = new IcmpLimiter(1e9, 1e9);
  const pkt = makePacket({ src: '10.5.1.10', dst: '10.5.2.20', payloadLen: 56 });
  const one = () => { pkt.copy(batch.buf, 0); batch.lens[0] = pkt.length; routes.refresh(); return forwardFromTun(batch, 1, routes, icmp, lim, counters, 1472); };
  for (let i = 0; i < 2e5; i++) one();
  const w = new Int32Array(new SharedArrayBuffer(4));
  for (const idle of [0, 1, 10, 50]) {
    const xs = [];
    for (let k = 0; k < 60; k++) { if (idle) Atomics.wait(w, 0, 0, idle); const t0 = performance.now(); one(); xs.push((performance.now() - t0) * 1000); }
    xs.sort((a, b) => a - b);
    console.log(`idle ${idle} ms: forward of one packet p50 ${xs[30].toFixed(1)} us p90 ${xs[54].toFixed(1)} us`);
  }
}
