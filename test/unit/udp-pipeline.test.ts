import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UdpCounter, counterRegion, createCounterBuffer, readCounters, REGION_RX, REGION_TX, renderCounters, totalDrops } from '../../src/dataplane/counters.js';
import { checkIPv4, headerChecksumValid, Ipv4Check, onesSum } from '../../src/packet/ipv4.js';
import {
  accountDelivered,
  accountSent,
  acceptFromUdp,
  forwardFromTun,
  IcmpLimiter,
  ICMP_SLOT,
} from '../../src/dataplane/pipeline.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { createRouteTableBuffer, RouteTableReader, RouteTableWriter } from '../../src/dataplane/routes.js';
import { formatIP4, parseIP4 } from '../../src/net/ipaddr.js';
import { makePacket, type PacketSpec } from './packet-fixtures.js';

const SLOT = 2048;
const PATH_MTU = 1472;

function setup() {
  const sab = createRouteTableBuffer(16);
  new RouteTableWriter(sab).publish({
    ownNet: parseIP4('10.5.1.0'),
    ownPrefixLen: 24,
    network: parseIP4('10.5.0.0'),
    networkPrefixLen: 16,
    icmpSource: parseIP4('10.5.0.0'),
    routes: [
      { net: parseIP4('10.5.2.0'), prefixLen: 24, peer: parseIP4('192.0.2.2'), port: 8285 },
      { net: parseIP4('10.5.3.0'), prefixLen: 24, peer: parseIP4('192.0.2.3'), port: 9000 },
    ],
  });
  const counterSab = createCounterBuffer();
  return { routes: new RouteTableReader(sab), counterSab };
}

/** Fill a batch with packets (Buffers or raw lengths-with-bytes). */
function fill(batch: PacketBatch, packets: (Buffer | { bytes: Buffer; len: number })[], srcs: string[] = []): number {
  packets.forEach((p, i) => {
    const bytes = Buffer.isBuffer(p) ? p : p.bytes;
    bytes.copy(batch.buf, i * batch.slotSize, 0, Math.min(bytes.length, batch.slotSize));
    batch.lens[i] = Buffer.isBuffer(p) ? p.length : p.len;
    batch.addrs[i] = srcs[i] ? parseIP4(srcs[i]!) : 0;
    batch.ports[i] = 8285;
  });
  return packets.length;
}

const slot = (b: PacketBatch, i: number) => b.buf.subarray(i * b.slotSize, i * b.slotSize + b.lens[i]!);

test('TUN -> UDP: routes, compacts survivors, decrements TTL, answers drops with ICMP, counts every packet', () => {
  const { routes, counterSab } = setup();
  const counters = counterRegion(counterSab, REGION_TX);
  const batch = new PacketBatch(64, SLOT);
  const icmp = new PacketBatch(64, ICMP_SLOT);
  const limiter = new IcmpLimiter(1e9, 1e9);
  const p = (s: Partial<PacketSpec>) => makePacket({ src: '10.5.1.10', dst: '10.5.2.20', ...s });
  const input = [
    p({ payloadLen: 100 }), // 0 ok -> 192.0.2.2
    { bytes: Buffer.concat([Buffer.from([0x60]), Buffer.alloc(39)]), len: 40 }, // 1 IPv6: not forwarded
    p({ dst: '10.5.9.9' }), // 2 no lease in Network -> net unreachable
    p({ dst: '10.5.9.9', proto: 1, firstPayloadByte: 3 }), // 3 no route, but an ICMP error: no ICMP back
    p({ ttl: 1 }), // 4 TTL exceeded -> time exceeded
    p({ payloadLen: 1500, df: true }), // 5 too big with DF -> frag needed
    p({ payloadLen: 1500 }), // 6 too big without DF -> sent (outer fragments)
    p({ dst: '10.5.1.99' }), // 7 our own subnet
    p({ dst: '10.5.3.1', ttl: 5 }), // 8 ok -> 192.0.2.3:9000
    p({ dst: '8.8.8.8' }), // 9 outside Network -> no route
    { bytes: p({}), len: 10 }, // 10 truncated read
  ];
  const n = fill(batch, input);
  const m = forwardFromTun(batch, n, routes, icmp, limiter, counters, PATH_MTU);
  assert.equal(m, 3);
  assert.deepEqual([...batch.addrs.subarray(0, 3)].map(formatIP4), ['192.0.2.2', '192.0.2.2', '192.0.2.3']);
  assert.deepEqual([...batch.ports.subarray(0, 3)], [8285, 8285, 9000]);
  assert.deepEqual([...batch.lens.subarray(0, 3)], [120, 1520, 52]);
  for (let i = 0; i < 3; i++) {
    assert.ok(headerChecksumValid(batch.buf, i * SLOT));
  }
  assert.equal(slot(batch, 0)[8], 63);
  assert.equal(slot(batch, 2)[8], 4);
  // Payload bytes moved intact by the compaction.
  assert.deepEqual(slot(batch, 2).subarray(20), (input[8] as Buffer).subarray(20));

  assert.equal(icmp.count, 4);
  const kinds = Array.from({ length: icmp.count }, (_, i) => {
    const r = slot(icmp, i);
    assert.equal(checkIPv4(r, 0, r.length, true, true), Ipv4Check.Ok);
    assert.equal(onesSum(r, 20, r.length - 20), 0xffff);
    assert.equal(formatIP4(r.readUInt32BE(12)), '10.5.0.0');
    assert.equal(formatIP4(r.readUInt32BE(16)), '10.5.1.10');
    return `${r[20]}/${r[21]}/${r.readUInt16BE(26)}`;
  });
  assert.deepEqual(kinds, ['3/0/0', '11/0/0', `3/4/${PATH_MTU}`, '3/0/0']);

  accountSent(batch, m, 2, counters); // pretend the last datagram was rejected by the kernel
  const c = readCounters(counterSab);
  assert.equal(c.tunRead, 11);
  assert.equal(c.sent, 2);
  assert.equal(c.txBytes, 120 + 1520);
  assert.equal(c.txNotIPv4, 1);
  assert.equal(c.txMalformed, 1);
  assert.equal(c.txNoRoute, 3);
  assert.equal(c.txTtl, 1);
  assert.equal(c.txTooBig, 1);
  assert.equal(c.txLocal, 1);
  assert.equal(c.txUdpSend, 1);
  assert.equal(c.icmpNetUnreachable, 2);
  assert.equal(c.icmpTimeExceeded, 1);
  assert.equal(c.icmpFragNeeded, 1);
  assert.equal(c.icmpSuppressed, 1, 'no ICMP error about an ICMP error');
  assert.equal(c.sent + totalDrops(c, 'tx'), c.tunRead, 'every packet read is sent or dropped');
});

test('ICMP replies are rate limited', () => {
  const { routes, counterSab } = setup();
  const counters = counterRegion(counterSab, REGION_TX);
  const batch = new PacketBatch(64, SLOT);
  const icmp = new PacketBatch(64, ICMP_SLOT);
  const limiter = new IcmpLimiter(1000, 5);
  limiter.refill(1000);
  const n = fill(batch, Array.from({ length: 20 }, () => makePacket({ src: '10.5.1.10', dst: '10.5.77.1' })));
  forwardFromTun(batch, n, routes, icmp, limiter, counters, PATH_MTU);
  assert.equal(icmp.count, 5);
  const c = readCounters(counterSab);
  assert.equal(c.icmpNetUnreachable, 5);
  assert.equal(c.icmpSuppressed, 15);
  limiter.refill(1003); // 3 ms at 1000/s = 3 tokens
  icmp.count = 0;
  fill(batch, Array.from({ length: 20 }, () => makePacket({ src: '10.5.1.10', dst: '10.5.77.1' })));
  forwardFromTun(batch, n, routes, icmp, limiter, counters, PATH_MTU);
  assert.equal(icmp.count, 3);
});

test('UDP -> TUN: only well-formed packets from the right peer to our subnet pass; every drop counted', () => {
  const { routes, counterSab } = setup();
  const counters = counterRegion(counterSab, REGION_RX);
  const batch = new PacketBatch(64, SLOT);
  const p = (s: Partial<PacketSpec>) => makePacket({ src: '10.5.2.20', dst: '10.5.1.10', ...s });
  const badSum = p({});
  badSum[10] ^= 0xff;
  const trailing = Buffer.concat([p({}), Buffer.alloc(3)]);
  const cases: [Buffer | { bytes: Buffer; len: number }, string][] = [
    [p({ payloadLen: 200 }), '192.0.2.2'], // 0 ok
    [Buffer.from('not an ip packet at all, just text'), '192.0.2.2'], // 1 malformed
    [badSum, '192.0.2.2'], // 2 bad checksum
    [trailing, '192.0.2.2'], // 3 total length != datagram length
    [{ bytes: p({}), len: 30 }, '192.0.2.2'], // 4 truncated payload (datagram shorter than total length)
    [{ bytes: Buffer.alloc(SLOT), len: SLOT + 1 }, '192.0.2.2'], // 5 cut short by the slot
    [p({ src: '10.5.3.20' }), '192.0.2.2'], // 6 spoofed: 192.0.2.2 owns 10.5.2.0/24 only
    [p({}), '198.51.100.7'], // 7 unknown peer
    [p({ dst: '10.5.3.1', src: '10.5.2.20' }), '192.0.2.2'], // 8 not for us
    [p({ src: '10.5.3.20', dst: '10.5.1.11', payloadLen: 7 }), '192.0.2.3'], // 9 ok
    [p({ dst: '224.0.0.1' }), '192.0.2.2'], // 10 multicast: not ours
    [{ bytes: Buffer.alloc(0), len: 0 }, '192.0.2.2'], // 11 empty datagram
  ];
  const n = fill(batch, cases.map((c) => c[0]), cases.map((c) => c[1]));
  const m = acceptFromUdp(batch, n, routes, counters);
  assert.equal(m, 2);
  assert.deepEqual(slot(batch, 0), cases[0]![0]);
  assert.deepEqual(slot(batch, 1), cases[9]![0], 'compacted into slot 1, untouched (TTL is decremented by the sender only)');
  accountDelivered(m, 1, counters);
  const c = readCounters(counterSab);
  assert.equal(c.received, 12);
  assert.equal(c.rxMalformed, 5);
  assert.equal(c.rxTruncated, 1);
  assert.equal(c.rxSpoofed, 1);
  assert.equal(c.rxUnknownPeer, 1);
  assert.equal(c.rxNotLocal, 2);
  assert.equal(c.delivered, 1);
  assert.equal(c.rxTunWrite, 1);
  assert.equal(c.delivered + totalDrops(c, 'rx'), c.received, 'every datagram is delivered or dropped');
});

test('a full batch of good packets is forwarded without any copying', () => {
  const { routes, counterSab } = setup();
  const batch = new PacketBatch(64, SLOT);
  const icmp = new PacketBatch(64, ICMP_SLOT);
  const pkts = Array.from({ length: 64 }, (_, i) => makePacket({ src: '10.5.1.10', dst: `10.5.2.${i}`, payloadLen: 1400 }));
  const n = fill(batch, pkts);
  const m = forwardFromTun(batch, n, routes, icmp, new IcmpLimiter(), counterRegion(counterSab, REGION_TX), PATH_MTU);
  assert.equal(m, 64);
  assert.equal(icmp.count, 0);
  for (let i = 0; i < 64; i++) assert.equal(batch.buf[i * SLOT + 19], i);
});

test('Prometheus rendering sums regions and labels drop reasons', () => {
  const sab = createCounterBuffer();
  counterRegion(sab, REGION_TX)[UdpCounter.sent] = 5;
  counterRegion(sab, REGION_RX)[UdpCounter.rxSpoofed] = 7;
  counterRegion(sab, REGION_TX)[UdpCounter.txNoRoute] = 2;
  counterRegion(sab, REGION_RX)[UdpCounter.received] = 2 ** 40;
  const text = renderCounters(sab);
  assert.match(text, /^flannel_udp_sent_packets_total 5$/m);
  assert.match(text, /^flannel_udp_received_packets_total 1099511627776$/m);
  assert.match(text, /^flannel_udp_dropped_packets_total\{direction="rx",reason="spoofed"\} 7$/m);
  assert.match(text, /^flannel_udp_dropped_packets_total\{direction="tx",reason="no_route"\} 2$/m);
  assert.match(text, /^# TYPE flannel_udp_dropped_packets_total counter$/m);
  // Every sample line is "name{labels} value".
  for (const line of text.trim().split('\n')) if (!line.startsWith('#')) assert.match(line, /^[a-z_]+(\{[^}]*\})? \d+$/);
});
