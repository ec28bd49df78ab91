/**
 * The IPv6 side of the userspace dataplane (the wireguard backend's
 * flannel-wg-v6): the IPv6 route table against a naive model, the IPv6
 * pipeline's checks and counters, the endpoint id table, the addon's IPv6
 * sockets with endpoint ids and reported sources, cookies bound to IPv6
 * sources, and WireGuard's open trimming an IPv6 packet's padding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createRouteTable6Buffer, RouteTable6Reader, RouteTable6Writer, words6, type Route6Entry } from '../../src/dataplane/routes6.js';
import { acceptFromUdp6, forwardFromTun6 } from '../../src/dataplane/pipeline6.js';
import { EndpointTable6 } from '../../src/dataplane/endpoints6.js';
import { counterRegion, createCounterBuffer, readCounters, REGION_RX, REGION_TX } from '../../src/dataplane/counters.js';
import { SourceCheck } from '../../src/dataplane/routes.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { mask6, parseIP6 } from '../../src/net/ipaddr.js';
import { loadNative } from '../../src/native/addon.js';
import { UdpSocket } from '../../src/conn/udp-socket.js';
import { CookieChecker, CookieGenerator, ipv6Source } from '../../src/wireguard/cookie.js';
import { createInitiation } from '../../src/wireguard/noise.js';
import { generateKeyPair, publicKeyOf } from '../../src/wireguard/primitives.js';

const SLOT = 2048;

const route = (cidr: string, peer: number, port = 51821): Route6Entry => {
  const [a, l] = cidr.split('/');
  return { words: words6(parseIP6(a!)), prefixLen: Number(l), peer, port };
};

/** An IPv6 packet: src, dst, payload length, hop limit; `extra` bytes of padding after it. */
function packet6(src: string, dst: string, payload = 20, hop = 64, extra = 0): Buffer {
  const p = Buffer.alloc(40 + payload + extra, 0xab);
  p[0] = 0x60;
  p[1] = p[2] = p[3] = 0;
  p.writeUInt16BE(payload, 4);
  p[6] = 17;
  p[7] = hop;
  const put = (ip: bigint, at: number) => {
    for (let i = 15; i >= 0; i--, ip >>= 8n) p[at + i] = Number(ip & 0xffn);
  };
  put(parseIP6(src), 8);
  put(parseIP6(dst), 24);
  return p;
}

function fill(b: PacketBatch, pkts: Buffer[], from: number[] = []): number {
  pkts.forEach((p, i) => {
    p.copy(b.buf, i * b.slotSize);
    b.lens[i] = p.length;
    b.addrs[i] = from[i] ?? 0;
  });
  return pkts.length;
}

function table(routes: Route6Entry[], own = 'fd00:5:0:1::/64'): RouteTable6Reader {
  const sab = createRouteTable6Buffer(4096);
  const [a, l] = own.split('/');
  new RouteTable6Writer(sab).publish({ own: { words: words6(parseIP6(a!)), prefixLen: Number(l) }, routes });
  return new RouteTable6Reader(sab);
}

test('IPv6 route table: longest prefix wins, own subnet, source checks per endpoint; agrees with a naive model on random addresses', () => {
  const r = table([route('fd00:5:0:2::/64', 7), route('fd00:5:0:3::/64', 8), route('fd00:5::/56', 9), route('fd00:5:0:3::42/128', 10), route('fd00:6::/64', 7)]);
  const at = (dst: string) => {
    const i = r.lookup(packet6('fd00:5:0:1::1', dst), 0);
    return i < 0 ? -1 : r.peers[i]!;
  };
  assert.equal(at('fd00:5:0:2::9'), 7);
  assert.equal(at('fd00:5:0:3::9'), 8);
  assert.equal(at('fd00:5:0:3::42'), 10, '/128 beats /64');
  assert.equal(at('fd00:5:0:77::1'), 9, 'the /56 catches the rest');
  assert.equal(at('fd00:7::1'), -1);
  const own = packet6('fd00:5:0:1::1', 'fd00:5:0:1::99');
  assert.ok(r.isOwn(own, 24) && !r.isOwn(packet6('::1', 'fd00:5:0:2::1'), 24));
  assert.equal(r.checkSource(7, packet6('fd00:6::5', '::1'), 0), SourceCheck.Allowed, 'a second subnet of the same endpoint');
  assert.equal(r.checkSource(7, packet6('fd00:5:0:3::5', '::1'), 0), SourceCheck.Spoofed);
  assert.equal(r.checkSource(99, packet6('fd00:5:0:2::5', '::1'), 0), SourceCheck.UnknownPeer);

  // Random tables and destinations against a bigint longest-prefix match.
  for (let round = 0; round < 20; round++) {
    const routes: Route6Entry[] = [];
    const model: { net: bigint; len: number; peer: number }[] = [];
    for (let k = 0; k < 50; k++) {
      const len = [48, 56, 64, 64, 64, 96, 128][k % 7]!;
      const ip = (0xfd00n << 112n) | (BigInt(`0x${randomBytes(14).toString('hex')}`) & ((1n << 112n) - 1n) & (((1n << 128n) - 1n) ^ ((1n << BigInt(128 - len)) - 1n)));
      const net = ip & mask6(len);
      if (model.some((m) => m.len === len && m.net === net)) continue;
      routes.push({ words: words6(net), prefixLen: len, peer: k + 1, port: 1 });
      model.push({ net, len, peer: k + 1 });
    }
    const t = table(routes);
    for (let q = 0; q < 200; q++) {
      // Half the queries inside a known route, half anywhere in fd00::/16.
      const base = q % 2 === 0 ? model[q % model.length]!.net : 0xfd00n << 112n;
      const dst = base | (BigInt(`0x${randomBytes(16).toString('hex')}`) & ((1n << BigInt(128 - (q % 2 === 0 ? model[q % model.length]!.len : 16))) - 1n));
      const want = model.filter((m) => (dst & mask6(m.len)) === m.net).sort((a, b) => b.len - a.len)[0]?.peer ?? -1;
      const p = Buffer.alloc(40);
      for (let i = 15, v = dst; i >= 0; i--, v >>= 8n) p[24 + i] = Number(v & 0xffn);
      const i = t.lookup(p, 0);
      assert.equal(i < 0 ? -1 : t.peers[i]!, want);
    }
  }
});

test('IPv6 pipeline: routes, decrements the hop limit, counts every drop once; accepts only what the sending peer may send to us', () => {
  const r = table([route('fd00:5:0:2::/64', 7), route('fd00:5:0:3::/64', 8, 6000)]);
  const counters = createCounterBuffer();
  const tx = counterRegion(counters, REGION_TX);
  const b = new PacketBatch(16, SLOT);
  const ipv4 = Buffer.from('4500001c000000004011000000000000000000000000000000000000', 'hex');
  const n = fill(b, [
    packet6('fd00:5:0:1::1', 'fd00:5:0:2::1'),
    ipv4,
    packet6('fd00:5:0:1::1', 'fd00:5:0:1::2'),
    packet6('fd00:5:0:1::1', 'fd00:9::1'),
    packet6('fd00:5:0:1::1', 'fd00:5:0:3::1', 20, 1),
    packet6('fd00:5:0:1::1', 'fd00:5:0:3::1', 1500),
    packet6('fd00:5:0:1::1', 'fd00:5:0:2::1', 20).subarray(0, 50),
    Buffer.alloc(12, 0x60),
    packet6('fd00:5:0:1::1', 'fd00:5:0:3::1', 100, 64, 8),
  ]);
  assert.equal(forwardFromTun6(b, n, r, tx, 1420), 2);
  assert.deepEqual([b.addrs[0], b.ports[0], b.lens[0], b.buf[7]], [7, 51821, 60, 63]);
  assert.deepEqual([b.addrs[1], b.ports[1], b.lens[1], b.buf[SLOT + 7]], [8, 6000, 140, 63], 'trailing bytes after the payload length are not sent');
  const c = readCounters(counters);
  assert.deepEqual([c.tunRead, c.txNotIPv6, c.txLocal, c.txNoRoute, c.txTtl, c.txTooBig, c.txMalformed], [9, 1, 1, 1, 1, 1, 2]);

  const rx = counterRegion(counters, REGION_RX);
  const m = fill(
    b,
    [
      packet6('fd00:5:0:2::1', 'fd00:5:0:1::5', 30, 64, 16),
      packet6('fd00:5:0:3::1', 'fd00:5:0:1::5'),
      packet6('fd00:5:0:2::1', 'fd00:5:0:1::5'),
      packet6('fd00:5:0:2::1', 'fd00:5:0:4::5'),
      packet6('fd00:5:0:2::1', 'ff02::1'),
      ipv4,
      packet6('fd00:5:0:3::1', 'fd00:5:0:1::6'),
    ],
    [7, 7, 99, 7, 7, 7, 8],
  );
  b.lens[6] = SLOT + 1; // cut short by the slot
  assert.equal(acceptFromUdp6(b, m, r, rx), 1);
  assert.equal(b.lens[0], 70, 'padding cut by the payload length');
  const d = readCounters(counters);
  assert.deepEqual([d.received, d.rxSpoofed, d.rxUnknownPeer, d.rxNotLocal, d.rxMalformed, d.rxTruncated], [7, 1, 1, 2, 1, 1]);
});

test('endpoint ids: stable per address, released when no holder uses them, reused only after a while; a bounded ring for other sources', () => {
  let t = 0;
  const e = new EndpointTable6(3, 2, () => t);
  const a = e.idOf(parseIP6('2001:db8::1'));
  const b = e.idOf(parseIP6('2001:db8::2'));
  assert.ok(a >= 1 && b >= 1 && a !== b, 'id 0 means "no id"');
  assert.equal(e.idOf(parseIP6('2001:db8::1')), a);
  assert.equal(e.text(b), '2001:db8::2');
  const bytes = new Uint8Array(e.sab);
  assert.deepEqual([...bytes.subarray(16 * a, 16 * a + 16)], [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1]);
  const c = e.idOf(parseIP6('2001:db8::3'));
  assert.throws(() => e.idOf(parseIP6('2001:db8::4')), /no free IPv6 endpoint id/);
  e.hold('routes', [a, c]);
  e.hold('peers', [c]);
  // b is released now, but reused only after 10 s (a worker may still hold a table naming it).
  assert.throws(() => e.idOf(parseIP6('2001:db8::4')), /no free/);
  t = 10_000;
  assert.equal(e.idOf(parseIP6('2001:db8::4')), b);
  assert.equal(e.text(b), '2001:db8::4');
  e.hold('routes', []);
  assert.equal(e.idOf(parseIP6('2001:db8::3')), c, 'still held by the peers');
  // Sources: a lease endpoint keeps its id; others take the ring in turn.
  const src = (last: number) => Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), last]);
  assert.equal(e.idForSource(src(3)), c);
  const r1 = e.idForSource(src(0x77));
  const r2 = e.idForSource(src(0x78));
  const r3 = e.idForSource(src(0x79));
  assert.ok(r1 > c && r2 > c && r1 !== r2 && r3 === r1, 'a ring of 2');
  assert.equal(e.text(r1), '2001:db8::79');
});

test('addon: an IPv6 socket sends to endpoint ids and reports each datagram\'s 16-byte source, GRO super-datagrams cut with theirs; ids beyond the table refused', async () => {
  const { enableUdpGro } = await import('../../src/conn/udp-socket.js');
  const addon = loadNative();
  const a = addon.udpOpen('::1', 0, false);
  const bfd = addon.udpOpen('::1', 0, false);
  try {
    const bPort = addon.udpLocalPort(bfd);
    const aPort = addon.udpLocalPort(a);
    const ends = new EndpointTable6(4, 2);
    const id = ends.idOf(parseIP6('::1'));
    const sender = new UdpSocket(addon, a, 100, { endpoints6: new Uint8Array(ends.sab) });
    const gro = enableUdpGro(addon, bfd);
    const receiver = new UdpSocket(addon, bfd, 500, { endpoints6: new Uint8Array(ends.sab), gro });
    // Six datagrams: a GSO run of four equal ones (one super-datagram with GRO), then two shorter ones.
    const sizes = [50, 50, 50, 50, 41, 42];
    const out = new PacketBatch(sizes.length, 256);
    sizes.forEach((len, i) => {
      out.buf.fill(i + 1, i * 256, i * 256 + len);
      out.lens[i] = len;
      out.addrs[i] = id;
      out.ports[i] = bPort;
    });
    assert.equal(sender.send(out, sizes.length, true), sizes.length);
    const inb = new PacketBatch(8, 256);
    let got = 0;
    let supers = 0;
    while (got < sizes.length) {
      const n = receiver.recv(inb);
      assert.ok(n > 0, 'datagrams arrive');
      supers += receiver.recvCounts.superDatagrams;
      for (let i = 0; i < n; i++, got++) {
        assert.equal(inb.lens[i], sizes[got]);
        assert.equal(inb.buf[i * 256], got + 1);
        assert.equal(inb.addrs[i], 0, 'no u32 address on IPv6');
        assert.equal(inb.ports[i], aPort);
        assert.deepEqual([...inb.sources6!.subarray(16 * i, 16 * i + 16)], [...Array(15).fill(0), 1]);
      }
    }
    if (gro) assert.ok(supers >= 1, 'the GSO run came as a GRO super-datagram and was cut');
    out.addrs[0] = 999;
    assert.throws(() => sender.send(out, 1, false), /names no endpoint/);
    assert.throws(() => addon.udpOpen('fe80::zz', 0, false), /IPv4 or IPv6 address/);
  } finally {
    addon.close(a);
    addon.close(bfd);
  }
});

test('cookies are bound to the IPv6 source and port', () => {
  const responder = generateKeyPair();
  const initiator = generateKeyPair();
  const checker = new CookieChecker(publicKeyOf(responder.privateKey));
  const gen = new CookieGenerator(publicKeyOf(responder.privateKey));
  const { message } = createInitiation({ staticPrivate: initiator.privateKey, staticPublic: publicKeyOf(initiator.privateKey) }, publicKeyOf(responder.privateKey), 1);
  gen.addMacs(message);
  const from = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 2]);
  const elsewhere = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 3]);
  assert.ok(!checker.checkMac2(message, ipv6Source(from, 51821)));
  assert.ok(gen.consumeReply(checker.createReply(message, ipv6Source(from, 51821))));
  gen.addMacs(message);
  assert.ok(checker.checkMac2(message, ipv6Source(from, 51821)));
  assert.ok(!checker.checkMac2(message, ipv6Source(elsewhere, 51821)), 'another address');
  assert.ok(!checker.checkMac2(message, ipv6Source(from, 51822)), 'another port');
});

test('one device for both families (the one-device Modes): a mixed batch is routed per family, every packet counted once, IPv6 survivors after the IPv4 ones', async () => {
  const { DualRouting } = await import('../../src/dataplane/routing.js');
  const { createRouteTableBuffer, RouteTableWriter } = await import('../../src/dataplane/routes.js');
  const { IcmpLimiter } = await import('../../src/dataplane/pipeline.js');
  const { parseIP4 } = await import('../../src/net/ipaddr.js');
  const { makePacket } = await import('./packet-fixtures.js');
  const r4 = createRouteTableBuffer(16);
  new RouteTableWriter(r4).publish({
    ownNet: parseIP4('10.5.1.0'),
    ownPrefixLen: 24,
    network: parseIP4('10.5.0.0'),
    networkPrefixLen: 16,
    icmpSource: parseIP4('10.5.0.0'),
    routes: [{ net: parseIP4('10.5.2.0'), prefixLen: 24, peer: 7, port: 51820 }],
  });
  const r6 = createRouteTable6Buffer(16);
  // The same endpoint (7) holds an IPv4 and an IPv6 subnet, as a dual-stack peer does.
  new RouteTable6Writer(r6).publish({ own: { words: words6(parseIP6('fd00:5:0:1::')), prefixLen: 64 }, routes: [route('fd00:5:0:2::/64', 7, 51820)] });
  const routing = new DualRouting(r4, r6);
  const counters = createCounterBuffer();
  const b = new PacketBatch(8, SLOT);
  const v4 = (dst: string) => makePacket({ src: '10.5.1.2', dst, proto: 17, payloadLen: 30 });
  const icmp = new PacketBatch(8, 128);
  const n = fill(b, [packet6('fd00:5:0:1::1', 'fd00:5:0:2::1', 10), v4('10.5.2.9'), packet6('fd00:5:0:1::1', 'fd00:9::1'), v4('10.5.9.9'), v4('10.5.2.8'), packet6('fd00:5:0:1::1', 'fd00:5:0:2::2', 11)]);
  const m = routing.forward(b, n, icmp, new IcmpLimiter(), counterRegion(counters, REGION_TX), 1420);
  assert.equal(m, 4);
  const versions = Array.from({ length: m }, (_, i) => b.buf[i * SLOT]! >> 4);
  assert.deepEqual(versions, [4, 4, 6, 6], 'IPv4 first, each family in its order');
  assert.deepEqual([b.lens[2], b.lens[3]], [50, 51]);
  assert.ok([...b.addrs.subarray(0, 4)].every((a) => a === 7));
  const c = readCounters(counters);
  assert.deepEqual([c.tunRead, c.txNoRoute], [6, 2]);
  // Receive: what endpoint 7 may send, of either family.
  const rx = counterRegion(counters, REGION_RX);
  const k = fill(b, [packet6('fd00:5:0:2::1', 'fd00:5:0:1::5'), makePacket({ src: '10.5.2.3', dst: '10.5.1.4', proto: 17, payloadLen: 8 }), packet6('fd00:5:0:3::1', 'fd00:5:0:1::5'), makePacket({ src: '10.5.3.3', dst: '10.5.1.4', proto: 17, payloadLen: 8 })], [7, 7, 7, 7]);
  assert.equal(routing.accept(b, k, rx), 2);
  const d = readCounters(counters);
  assert.deepEqual([d.received, d.rxSpoofed], [4, 2]);
  // One family only: straight through.
  const j = fill(b, [v4('10.5.2.1'), v4('10.5.2.2')]);
  assert.equal(routing.forward(b, j, icmp, new IcmpLimiter(), counterRegion(counters, REGION_TX), 1420), 2);
});

test('addon: a dual-stack socket (Mode auto) reaches IPv4 peers through ::ffff:a.b.c.d ids and reports them so; endpoint text as wg writes it', async () => {
  const { endpointAddress6 } = await import('../../src/dataplane/endpoints6.js');
  const addon = loadNative();
  const dual = addon.udpOpen('::', 0, false, true);
  const v4 = addon.udpOpen('127.0.0.1', 0, false);
  try {
    const ends = new EndpointTable6(4, 2);
    const id = ends.idOf(endpointAddress6('127.0.0.1'));
    assert.equal(ends.text(id), '127.0.0.1', 'an IPv4-mapped endpoint reads as the IPv4 address');
    const sock = new UdpSocket(addon, dual, 500, { endpoints6: new Uint8Array(ends.sab) });
    const out = new PacketBatch(1, 256);
    out.buf.write('ping');
    out.lens[0] = 4;
    out.addrs[0] = id;
    out.ports[0] = addon.udpLocalPort(v4);
    assert.equal(sock.send(out, 1, false), 1);
    const plain = new UdpSocket(addon, v4, 500);
    const got = new PacketBatch(1, 256);
    assert.equal(plain.recv(got), 1);
    assert.equal(got.ports[0], addon.udpLocalPort(dual));
    assert.equal(got.addrs[0], 0x7f000001, 'an IPv4 datagram from 127.0.0.1');
    got.lens[0] = 4;
    got.ports[0] = addon.udpLocalPort(dual);
    assert.equal(plain.send(got, 1, false), 1);
    const back = new PacketBatch(1, 256);
    assert.equal(sock.recv(back), 1);
    assert.deepEqual([...back.sources6!.subarray(0, 16)], [...Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1]);
    assert.equal(ends.idForSource(back.sources6!.subarray(0, 16)), id, 'the source is the lease endpoint it was sent to');
    assert.throws(() => addon.udpOpen('0.0.0.0', 0, false, true), /dualStack needs an IPv6 bindAddr/);
  } finally {
    addon.close(dual);
    addon.close(v4);
  }
});

test('wgSeal pads to 16 bytes but never past the device MTU (as the kernel\'s WireGuard and wireguard-go): a full-size packet still fits an IPv6 underlay', () => {
  const addon = loadNative();
  const keys = new Uint8Array(32).fill(7);
  const sealed = (len: number, mtu?: number) => {
    const b = new PacketBatch(1, 2048);
    b.lens[0] = len;
    addon.wgSeal(b.buf, 2048, b.lens, 1, keys, Uint32Array.of(0), Uint32Array.of(1), BigUint64Array.of(0n), mtu);
    return b.lens[0]! - 32; // the padded plaintext (header 16, tag 16)
  };
  assert.equal(sealed(1420), 1424, 'no MTU: to 16 bytes');
  assert.equal(sealed(1420, 1420), 1420, 'a full-size packet is not padded past the MTU');
  assert.equal(sealed(1410, 1420), 1420, 'rounded up to 1424, capped at the MTU');
  assert.equal(sealed(1390, 1420), 1392);
  assert.equal(sealed(1419, 1420), 1420);
  assert.equal(sealed(61, 1420), 64);
  assert.equal(sealed(0, 1420), 0, 'a keepalive stays empty');
  // Over the MTU (only a mis-set MTU lets one through): its remainder pads as wireguard-go pads it.
  assert.equal(sealed(1430, 1420), 1430 + ((((1430 % 1420) + 15) & ~15) - (1430 % 1420)));
});
