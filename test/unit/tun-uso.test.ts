/**
 * UDP segmentation offload both ways (USO on flannel0): the tx side cuts
 * UDP super-packets into datagrams (segmentUdp4), the rx side glues
 * received datagrams of one flow back into GSO_UDP_L4 super-packets
 * (RxCoalescer with udp). The property: for random super-packets, cut ->
 * glue -> cut gives the same datagrams byte for byte, each with valid IP
 * and UDP checksums, and the glued super-packet is what the kernel accepts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headerChecksumValid, onesSum, readU16 } from '../../src/packet/ipv4.js';
import { newCoalesceCounts, RxCoalescer, SUPER_SLOT } from '../../src/tun/gro.js';
import { completeChecksum, expandFromTun, newExpandCounts, SegmentError, segmentUdp4, VNET_GSO_UDP_L4, VNET_HDR_LEN, wordView } from '../../src/tun/offload.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { loadNative } from '../../src/native/addon.js';

const SLOT = 2048;

/** Small deterministic PRNG (mulberry32), so a failure names a seed that reproduces it. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface UdpFlow {
  sport: number;
  dport: number;
  id: number;
  tos: number;
  ttl: number;
  df: boolean;
  src: number[];
  dst: number[];
}

/** A UDP super-packet as an application's UDP_SEGMENT send reaches flannel0 (checksum field: whatever; we recompute). */
function udpSuper(payload: Buffer, f: UdpFlow): Buffer {
  const total = 28 + payload.length;
  const b = Buffer.alloc(total);
  b[0] = 0x45;
  b[1] = f.tos;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(f.id, 4);
  b[6] = f.df ? 0x40 : 0;
  b[8] = f.ttl;
  b[9] = 17;
  b.set(f.src, 12);
  b.set(f.dst, 16);
  b.writeUInt16BE(~onesSum(b, 0, 20) & 0xffff, 10);
  b.writeUInt16BE(f.sport, 20);
  b.writeUInt16BE(f.dport, 22);
  b.writeUInt16BE(8 + payload.length, 24);
  payload.copy(b, 28);
  return b;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** One's-complement sum over pseudo header + UDP header + payload: 0xffff when the checksum is valid. */
function udpSum(b: Uint8Array, off = 0): number {
  const total = readU16(b, off + 2);
  return fold(readU16(b, off + 12) + readU16(b, off + 14) + readU16(b, off + 16) + readU16(b, off + 18) + 17 + (total - 20) + onesSum(b, off + 20, total - 20));
}

function cut(sp: Buffer, gso: number): Buffer[] {
  const out = new PacketBatch(256, SLOT);
  const n = segmentUdp4(sp, 0, sp.length, gso, out, wordView(out.buf));
  assert.ok(n > 0, `segmentUdp4 refused (${n})`);
  return Array.from({ length: n }, (_, k) => Buffer.from(out.buf.subarray(k * SLOT, k * SLOT + out.lens[k]!)));
}

function glue(dgrams: Buffer[], sums: boolean) {
  const inb = new PacketBatch(dgrams.length, SLOT);
  dgrams.forEach((d, i) => {
    d.copy(inb.buf, i * SLOT);
    inb.lens[i] = d.length;
  });
  const gro = new RxCoalescer(dgrams.length, true);
  let s: Uint16Array | null = null;
  if (sums) {
    s = new Uint16Array(dgrams.length);
    loadNative().sumSlots(inb.buf, SLOT, inb.lens, dgrams.length, 20, s);
  }
  const counts = newCoalesceCounts();
  const n = gro.coalesce(inb, dgrams.length, wordView(inb.buf), counts, s);
  return Array.from({ length: n }, (_, k) => ({
    pkt: Buffer.from(gro.out.buf.subarray(k * SUPER_SLOT, k * SUPER_SLOT + gro.out.lens[k]!)),
    hdr: Buffer.from(gro.hdrs.subarray(k * VNET_HDR_LEN, (k + 1) * VNET_HDR_LEN)),
    segs: gro.segs[k]!,
  }));
}

test('property: random UDP super-packets cut and glued back give byte-identical datagrams with valid checksums', () => {
  for (let seed = 1; seed <= 300; seed++) {
    const r = rng(seed);
    // Datagrams under 512 payload bytes are never glued (gro.ts); 1472 is the largest that fits the underlay.
    const gso = 512 + Math.floor(r() * (1472 - 512 + 1));
    const maxSegs = 1 + Math.floor(r() * 200);
    const plen = Math.min(65535 - 28, Math.floor(r() * gso * maxSegs) + (r() < 0.1 ? 0 : 1));
    const payload = Buffer.alloc(plen);
    for (let i = 0; i < plen; i++) payload[i] = Math.floor(r() * 256);
    const f: UdpFlow = {
      sport: 1 + Math.floor(r() * 65535),
      dport: 1 + Math.floor(r() * 65535),
      id: Math.floor(r() * 65536),
      tos: Math.floor(r() * 256),
      ttl: 1 + Math.floor(r() * 255),
      df: r() < 0.5,
      src: [10, 5, Math.floor(r() * 256), Math.floor(r() * 256)],
      dst: [10, 5, Math.floor(r() * 256), Math.floor(r() * 256)],
    };
    const sp = udpSuper(payload, f);
    const dgrams = cut(sp, gso);
    const msg = `seed ${seed} (payload ${plen}, gso ${gso}, ${dgrams.length} datagrams)`;
    assert.equal(dgrams.length, plen === 0 ? 1 : Math.ceil(plen / gso), msg);
    let at = 0;
    dgrams.forEach((d, k) => {
      assert.ok(headerChecksumValid(d, 0), `${msg}: IP header checksum of ${k}`);
      assert.equal(readU16(d, 2), d.length, `${msg}: IP length of ${k}`);
      assert.equal(readU16(d, 4), (f.id + k) & 0xffff, `${msg}: IP id of ${k}`);
      assert.equal(readU16(d, 24), d.length - 20, `${msg}: UDP length of ${k}`);
      assert.notEqual(readU16(d, 26), 0, `${msg}: a computed checksum is never sent as 0`);
      assert.equal(udpSum(d), 0xffff, `${msg}: UDP checksum of ${k}`);
      assert.deepEqual(d.subarray(28), payload.subarray(at, at + d.length - 28), `${msg}: payload of ${k}`);
      at += d.length - 28;
    });
    assert.equal(at, plen, msg);

    const glued = glue(dgrams, seed % 2 === 0);
    const again: Buffer[] = [];
    for (const g of glued) {
      if (g.segs === 1) {
        assert.equal(g.hdr.readUInt32LE(0) | g.hdr.readUInt32LE(4) | g.hdr.readUInt16LE(8), 0, `${msg}: a single datagram goes behind a zero header`);
        again.push(g.pkt);
        continue;
      }
      assert.ok(g.segs <= 128, `${msg}: at most UDP_MAX_SEGMENTS per super-packet`);
      assert.equal(g.hdr[0], 1, `${msg}: NEEDS_CSUM`);
      assert.equal(g.hdr[1], VNET_GSO_UDP_L4, `${msg}: GSO_UDP_L4`);
      assert.equal(g.hdr.readUInt16LE(2), 28, `${msg}: hdr_len`);
      assert.equal(g.hdr.readUInt16LE(4), gso, `${msg}: gso_size`);
      assert.equal(g.hdr.readUInt16LE(6), 20, `${msg}: csum_start`);
      assert.equal(g.hdr.readUInt16LE(8), 6, `${msg}: csum_offset`);
      assert.ok(headerChecksumValid(g.pkt, 0), `${msg}: super-packet IP header checksum`);
      assert.equal(readU16(g.pkt, 24), g.pkt.length - 20, `${msg}: super-packet UDP length`);
      const ph = fold(readU16(g.pkt, 12) + readU16(g.pkt, 14) + readU16(g.pkt, 16) + readU16(g.pkt, 18) + 17 + (g.pkt.length - 20));
      assert.equal(readU16(g.pkt, 26), ph, `${msg}: the checksum field holds the pseudo-header sum`);
      const done = Buffer.from(g.pkt);
      assert.ok(completeChecksum(done, null, 0, done.length, 20, 6));
      assert.equal(udpSum(done), 0xffff, `${msg}: the completed checksum is valid`);
      again.push(...cut(g.pkt, gso));
    }
    assert.equal(again.length, dgrams.length, msg);
    again.forEach((d, k) => assert.deepEqual(d, dgrams[k], `${msg}: datagram ${k} byte for byte after the round trip`));
  }
});

test('UDP datagrams that must not be glued pass alone, in order', () => {
  // Small datagrams stay single.
  const small = cut(udpSuper(Buffer.alloc(400 * 5, 1), { sport: 1, dport: 2, id: 1, tos: 0, ttl: 64, df: true, src: [10, 5, 1, 2], dst: [10, 5, 2, 3] }), 400);
  assert.deepEqual(
    glue(small, false).map((x) => x.segs),
    [1, 1, 1, 1, 1],
  );
  const f: UdpFlow = { sport: 4000, dport: 53, id: 100, tos: 0, ttl: 64, df: true, src: [10, 5, 1, 2], dst: [10, 5, 2, 3] };
  const base = cut(udpSuper(Buffer.alloc(4000, 7), f), 1000);
  assert.equal(base.length, 4);
  const noSum = Buffer.from(base[1]!);
  noSum.writeUInt16BE(0, 26); // "no checksum": the kernel would compute one, so the bytes would change
  const badSum = Buffer.from(base[1]!);
  badSum[40] = badSum[40]! ^ 1; // corrupt payload: must reach the kernel alone to be dropped there
  const gap = [base[0]!, base[2]!]; // id not consecutive
  const longer = cut(udpSuper(Buffer.alloc(2700, 1), { ...f, id: 500 }), 1000); // 1000, 1000, 700
  const mixed = [base[0]!, cut(udpSuper(Buffer.alloc(1000), { ...f, sport: 4001, id: 101 }), 1000)[0]!];
  for (const [name, pkts, want] of [
    ['zero checksum', [base[0]!, noSum], [1, 1]],
    ['bad checksum', [base[0]!, badSum], [1, 1]],
    ['ids not consecutive', gap, [1, 1]],
    ['other flow', mixed, [1, 1]],
    ['last one shorter closes the run', [...longer, ...cut(udpSuper(Buffer.alloc(1000), { ...f, id: 503 }), 1000)], [3, 1]],
  ] as [string, Buffer[], number[]][]) {
    const g = glue(pkts, false);
    assert.deepEqual(
      g.map((x) => x.segs),
      want,
      name,
    );
    const flat = g.flatMap((x) => (x.segs === 1 ? [x.pkt] : cut(x.pkt, x.hdr.readUInt16LE(4))));
    assert.equal(flat.length, pkts.length, name);
  }
  // Without USO on the device, UDP is never glued.
  const inb = new PacketBatch(4, SLOT);
  base.forEach((d, i) => {
    d.copy(inb.buf, i * SLOT);
    inb.lens[i] = d.length;
  });
  const tcpOnly = new RxCoalescer(4);
  assert.equal(tcpOnly.coalesce(inb, 4, wordView(inb.buf), newCoalesceCounts()), 4);
});

test('expandFromTun cuts GSO_UDP_L4 reads and refuses malformed ones', () => {
  const f: UdpFlow = { sport: 443, dport: 50000, id: 9, tos: 0, ttl: 64, df: true, src: [10, 5, 1, 2], dst: [10, 5, 2, 3] };
  const sp = udpSuper(Buffer.alloc(3000, 3), f);
  const inb = new PacketBatch(3, SUPER_SLOT);
  const hdrs = new Uint8Array(3 * VNET_HDR_LEN);
  const put = (i: number, p: Buffer, gso: number) => {
    p.copy(inb.buf, i * SUPER_SLOT);
    inb.lens[i] = p.length;
    const h = i * VNET_HDR_LEN;
    hdrs[h] = 1;
    hdrs[h + 1] = VNET_GSO_UDP_L4;
    hdrs[h + 2] = 28;
    hdrs[h + 4] = gso & 0xff;
    hdrs[h + 5] = gso >> 8;
    hdrs[h + 6] = 20;
    hdrs[h + 8] = 6;
  };
  put(0, sp, 1200);
  const frag = Buffer.from(sp);
  frag[6] = 0x20; // MF: a fragment cannot be a USO packet
  put(1, frag, 1200);
  const tcp = Buffer.from(sp);
  tcp[9] = 6;
  put(2, tcp, 1200);
  const out = new PacketBatch(16, SLOT);
  const counts = newExpandCounts();
  assert.equal(expandFromTun(inb, hdrs, 0, 3, out, wordView(out.buf), counts), 3);
  assert.deepEqual(counts, { superPackets: 1, udpSuperPackets: 1, segments: 3, malformed: 2 });
  assert.deepEqual([...out.lens.subarray(0, 3)], [1228, 1228, 628]);
  for (let k = 0; k < 3; k++) assert.equal(udpSum(out.buf.subarray(k * SLOT)), 0xffff);
  assert.equal(segmentUdp4(sp, 0, sp.length, 0, out, null), SegmentError.Malformed);
});
