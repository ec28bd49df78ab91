import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headerChecksumValid, onesSum, readU16, readU32 } from '../../src/packet/ipv4.js';
import { newCoalesceCounts, RxCoalescer, SUPER_SLOT } from '../../src/tun/gro.js';
import { completeChecksum, newSegmentSummer, segmentTcp4, segmentUdp4, VNET_HDR_LEN, wordView } from '../../src/tun/offload.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { loadNative } from '../../src/native/addon.js';

const SLOT = 2048;
const MSS = 1400;
const FIN = 0x01;
const SYN = 0x02;
const PSH = 0x08;
const ACK = 0x10;
const ECE = 0x40;

interface Flow {
  sport?: number;
  seq?: number;
  id?: number;
  tos?: number;
  ttl?: number;
}

/** A TSO-style super-packet (20-byte IP header, 32-byte TCP header with a timestamp option). */
function superPacket(payload: number, flags: number, f: Flow = {}): Buffer {
  const thl = 32;
  const total = 20 + thl + payload;
  const b = Buffer.alloc(total);
  b[0] = 0x45;
  b[1] = f.tos ?? 0;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(f.id ?? 0xfff0, 4);
  b[6] = 0x40;
  b[8] = f.ttl ?? 63;
  b[9] = 6;
  b.set([10, 5, 1, 2], 12);
  b.set([10, 5, 2, 3], 16);
  b.writeUInt16BE(f.sport ?? 40000, 20);
  b.writeUInt16BE(5201, 22);
  b.writeUInt32BE(f.seq ?? 0xffffe000, 24);
  b.writeUInt32BE(0x12345678, 28);
  b[32] = (thl / 4) << 4;
  b[33] = flags;
  b.writeUInt16BE(501, 34);
  b.set([1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9], 40);
  for (let i = 0; i < payload; i++) b[52 + i] = (i * 7 + 13 + (f.sport ?? 0)) & 255;
  return b;
}

/** The MSS-sized packets a sender would put on the wire for this super-packet (valid checksums). */
function segments(payload: number, flags: number, f: Flow = {}, mss = MSS): Buffer[] {
  const out = new PacketBatch(64, SLOT);
  const sp = superPacket(payload, flags, f);
  const n = segmentTcp4(sp, 0, sp.length, mss, out, wordView(out.buf));
  assert.ok(n > 0);
  return Array.from({ length: n }, (_, k) => Buffer.from(out.buf.subarray(k * SLOT, k * SLOT + out.lens[k]!)));
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function tcpSum(b: Uint8Array, off: number): number {
  const total = readU16(b, off + 2);
  return fold(readU16(b, off + 12) + readU16(b, off + 14) + readU16(b, off + 16) + readU16(b, off + 18) + 6 + (total - 20) + onesSum(b, off + 20, total - 20));
}

/** Recompute IP header and TCP checksums after editing a crafted packet. */
function fix(p: Buffer): Buffer {
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(~onesSum(p, 0, 20) & 0xffff, 10);
  if (p[9] === 6) {
    p.writeUInt16BE(0, 36);
    p.writeUInt16BE(~tcpSum(p, 0) & 0xffff, 36);
  }
  return p;
}

function batchOf(pkts: Buffer[]): PacketBatch {
  const b = new PacketBatch(Math.max(pkts.length, 1), SLOT);
  pkts.forEach((p, i) => {
    b.buf.set(p, i * SLOT);
    b.lens[i] = p.length;
  });
  b.count = pkts.length;
  return b;
}

function run(pkts: Buffer[], capacity = 64) {
  const counts = newCoalesceCounts();
  const gro = new RxCoalescer(capacity);
  const inb = batchOf(pkts);
  const n = gro.coalesce(inb, pkts.length, wordView(inb.buf), counts);
  const items = Array.from({ length: n }, (_, s) => ({
    pkt: Buffer.from(gro.out.buf.subarray(s * SUPER_SLOT, s * SUPER_SLOT + gro.out.lens[s]!)),
    hdr: Buffer.from(gro.hdrs.subarray(s * VNET_HDR_LEN, (s + 1) * VNET_HDR_LEN)),
    segs: gro.segs[s]!,
  }));
  assert.equal(
    items.reduce((a, it) => a + it.segs, 0),
    pkts.length,
    'every input packet is in exactly one output',
  );
  return { items, counts };
}

/**
 * Check one super-packet as the kernel will take it, then finish its
 * checksum and re-segment it with the tx side's segmentTcp4: the result
 * must be the original packets byte for byte.
 */
function checkSuper(it: { pkt: Buffer; hdr: Buffer; segs: number }, originals: Buffer[]): void {
  const { pkt, hdr } = it;
  assert.equal(it.segs, originals.length);
  const gso = originals[0]!.length - 52;
  assert.equal(hdr[0], 1, 'flags: NEEDS_CSUM');
  assert.equal(hdr[1], 1, 'gso_type: TCPV4');
  assert.equal(hdr.readUInt16LE(2), 52, 'hdr_len');
  assert.equal(hdr.readUInt16LE(4), gso, 'gso_size');
  assert.equal(hdr.readUInt16LE(6), 20, 'csum_start');
  assert.equal(hdr.readUInt16LE(8), 16, 'csum_offset');
  const payload = originals.reduce((a, p) => a + p.length - 52, 0);
  assert.equal(pkt.length, 52 + payload);
  assert.equal(readU16(pkt, 2), pkt.length, 'IP total length');
  assert.ok(headerChecksumValid(pkt, 0), 'IP header checksum');
  assert.equal(readU16(pkt, 4), readU16(originals[0]!, 4), 'IP id of the first segment');
  assert.equal(readU32(pkt, 24), readU32(originals[0]!, 24), 'seq of the first segment');
  // The partial checksum: folded pseudo-header sum over the whole TCP length, not inverted.
  const ph = fold(readU16(pkt, 12) + readU16(pkt, 14) + readU16(pkt, 16) + readU16(pkt, 18) + 6 + (pkt.length - 20));
  assert.equal(readU16(pkt, 36), ph, 'TCP checksum field holds the pseudo-header sum');
  const done = Buffer.from(pkt);
  assert.ok(completeChecksum(done, null, 0, done.length, hdr.readUInt16LE(6), hdr.readUInt16LE(8)));
  assert.equal(tcpSum(done, 0), 0xffff, 'completed checksum is valid');
  const out = new PacketBatch(64, SLOT);
  const n = segmentTcp4(done, 0, done.length, gso, out, wordView(out.buf));
  assert.equal(n, originals.length);
  for (let k = 0; k < n; k++) assert.deepEqual(out.buf.subarray(k * SLOT, k * SLOT + out.lens[k]!), originals[k], `segment ${k} byte for byte`);
}

function isPlain(it: { pkt: Buffer; hdr: Buffer; segs: number }, original: Buffer): void {
  assert.equal(it.segs, 1);
  assert.deepEqual(it.hdr, Buffer.alloc(VNET_HDR_LEN), 'zeroed vnet header');
  assert.deepEqual(it.pkt, original, 'packet unchanged');
}

test('segments of one flow become one super-packet that re-segments to the originals', () => {
  const segs = segments(20 * MSS - 300, ACK | PSH); // 20 segments, the last short and with PSH
  const { items, counts } = run(segs);
  assert.equal(items.length, 1);
  checkSuper(items[0]!, segs);
  assert.equal(items[0]!.pkt[33], ACK | PSH, 'PSH of the last segment kept');
  assert.equal(counts.superPackets, 1);
  assert.equal(counts.coalescedSegments, 20);
});

test('interleaved flows each coalesce, in the order of their first packet', () => {
  const a = segments(8 * MSS, ACK, { sport: 1111, seq: 1000, id: 10 });
  const b = segments(8 * MSS, ACK, { sport: 2222, seq: 0xfffffe00, id: 0xfffc }); // seq and id wrap
  const mixed: Buffer[] = [];
  for (let k = 0; k < 8; k++) mixed.push(a[k]!, b[k]!);
  const { items, counts } = run(mixed);
  assert.equal(items.length, 2);
  checkSuper(items[0]!, a);
  checkSuper(items[1]!, b);
  assert.equal(counts.coalescedSegments, 16);
});

test('a gap in sequence numbers starts a new super-packet', () => {
  const s = segments(10 * MSS, ACK);
  const withGap = [...s.slice(0, 4), ...s.slice(5)];
  const { items } = run(withGap);
  assert.equal(items.length, 2);
  checkSuper(items[0]!, s.slice(0, 4));
  checkSuper(items[1]!, s.slice(5));
  // Reordered segments: nothing is glued across the reordering (only the
  // flow's latest candidate may grow), so the packets keep their order.
  const swapped = [s[0]!, s[2]!, s[1]!, s[3]!];
  const r = run(swapped);
  assert.equal(r.items.length, 4);
  swapped.forEach((p, k) => isPlain(r.items[k]!, p));
});

test('other flags, pure ACKs and bad checksums go alone and close the flow, keeping its order', () => {
  const s = segments(8 * MSS, ACK);
  const ack = fix(Buffer.from(s[0]!.subarray(0, 52)));
  ack.writeUInt16BE(52, 2);
  fix(ack);
  const ece = fix(Buffer.from(s[4]!));
  ece[33] = ACK | ECE;
  fix(ece);
  const { items } = run([s[0]!, s[1]!, s[2]!, s[3]!, ack, ece, s[5]!, s[6]!, s[7]!]);
  assert.deepEqual(
    items.map((it) => it.segs),
    [4, 1, 1, 3],
  );
  checkSuper(items[0]!, s.slice(0, 4));
  isPlain(items[1]!, ack);
  isPlain(items[2]!, ece);
  checkSuper(items[3]!, s.slice(5));
  // FIN and SYN never coalesce.
  for (const flag of [FIN, SYN]) {
    const t = segments(3 * MSS, ACK);
    const odd = fix(Buffer.from(t[1]!));
    odd[33] = ACK | flag;
    fix(odd);
    const r = run([t[0]!, odd, t[2]!]);
    assert.deepEqual(
      r.items.map((it) => it.segs),
      [1, 1, 1],
      `flag ${flag}`,
    );
  }
  // A corrupted payload (TCP checksum wrong) must not be hidden in a CHECKSUM_PARTIAL super-packet.
  const bad = Buffer.from(s[2]!);
  bad[100] = bad[100]! ^ 0xff;
  const r = run([s[0]!, s[1]!, bad, s[3]!]);
  assert.deepEqual(
    r.items.map((it) => it.segs),
    [2, 1, 1],
  );
  isPlain(r.items[1]!, bad);
});

test('PSH ends a super-packet; a short segment ends it too', () => {
  const first = segments(3 * MSS, ACK | PSH, { seq: 5000, id: 100 });
  const second = segments(3 * MSS, ACK, { seq: 5000 + 3 * MSS, id: 103 });
  const { items } = run([...first, ...second]);
  assert.equal(items.length, 2);
  checkSuper(items[0]!, first);
  assert.equal(items[0]!.pkt[33], ACK | PSH);
  checkSuper(items[1]!, second);
  assert.equal(items[1]!.pkt[33], ACK);
  // A short segment in the middle: what follows cannot join (only the last may be short).
  const a = segments(2 * MSS + 100, ACK, { seq: 1, id: 1 });
  const b = segments(2 * MSS, ACK, { seq: 1 + 2 * MSS + 100, id: 4 });
  const r = run([...a, ...b]);
  assert.deepEqual(
    r.items.map((it) => it.segs),
    [3, 2],
  );
  checkSuper(r.items[0]!, a);
  checkSuper(r.items[1]!, b);
});

test('IP differences (TOS, TTL, id gap) and a 64 KB cap split super-packets', () => {
  const s = segments(6 * MSS, ACK);
  const tos = fix(Buffer.from(s[3]!));
  tos[1] = 2;
  fix(tos);
  assert.deepEqual(
    run([s[0]!, s[1]!, s[2]!, tos, s[4]!]).items.map((it) => it.segs),
    [3, 1, 1],
  );
  const ttl = fix(Buffer.from(s[3]!));
  ttl[8] = 20;
  fix(ttl);
  assert.deepEqual(
    run([s[0]!, s[1]!, s[2]!, ttl]).items.map((it) => it.segs),
    [3, 1],
  );
  const id = fix(Buffer.from(s[3]!));
  id.writeUInt16BE(7, 4);
  fix(id);
  assert.deepEqual(
    run([s[0]!, s[1]!, s[2]!, id]).items.map((it) => it.segs),
    [3, 1],
  );
  // 60 full segments: 52 + 46 * 1400 = 64452 is the most that fits 65535.
  const many = [...segments(46 * MSS, ACK, { seq: 0, id: 0 }), ...segments(14 * MSS, ACK, { seq: 46 * MSS, id: 46 })];
  const { items, counts } = run(many);
  assert.deepEqual(
    items.map((it) => it.segs),
    [46, 14],
  );
  assert.ok(items[0]!.pkt.length <= 65535);
  checkSuper(items[0]!, many.slice(0, 46));
  checkSuper(items[1]!, many.slice(46));
  assert.equal(counts.superPackets, 2);
  assert.equal(counts.coalescedSegments, 60);
});

test('ICMP, UDP and IP-options packets pass through untouched between TCP segments', () => {
  const s = segments(4 * MSS, ACK);
  const icmp = Buffer.alloc(84);
  icmp[0] = 0x45;
  icmp.writeUInt16BE(84, 2);
  icmp[8] = 64;
  icmp[9] = 1;
  icmp.set([10, 5, 1, 2, 10, 5, 2, 3], 12);
  icmp[20] = 8;
  fix(icmp);
  const udp = Buffer.alloc(1200, 0x5a);
  udp[0] = 0x45;
  udp[1] = 0;
  udp.writeUInt16BE(1200, 2);
  udp.writeUInt16BE(0, 6);
  udp[8] = 64;
  udp[9] = 17;
  udp.set([10, 5, 1, 2, 10, 5, 2, 3], 12);
  fix(udp);
  const { items, counts } = run([s[0]!, icmp, s[1]!, udp, s[2]!, s[3]!]);
  assert.deepEqual(
    items.map((it) => it.segs),
    [4, 1, 1],
  );
  checkSuper(items[0]!, s);
  isPlain(items[1]!, icmp);
  isPlain(items[2]!, udp);
  assert.equal(counts.superPackets, 1);
  assert.equal(counts.coalescedSegments, 4);
  // A lone segment is written as it came, behind a zero header.
  const one = run([s[0]!]);
  isPlain(one.items[0]!, s[0]!);
  assert.equal(one.counts.superPackets, 0);
  // Headers left over from a previous batch are cleared.
  const gro = new RxCoalescer(8);
  const counts2 = newCoalesceCounts();
  const b1 = batchOf(s);
  gro.coalesce(b1, 4, wordView(b1.buf), counts2);
  const b2 = batchOf([icmp]);
  assert.equal(gro.coalesce(b2, 1, wordView(b2.buf), counts2), 1);
  assert.deepEqual(Buffer.from(gro.hdrs.subarray(0, VNET_HDR_LEN)), Buffer.alloc(VNET_HDR_LEN));
});

test('the addon\'s sumSlots equals onesSum, and coalescing with its sums gives the same result', () => {
  const addon = loadNative();
  const s = segments(10 * MSS - 77, ACK | PSH);
  const bad = Buffer.from(s[5]!);
  bad[200] = bad[200]! ^ 1;
  const pkts = [...s.slice(0, 5), bad, ...s.slice(6)];
  const inb = batchOf(pkts);
  const sums = new Uint16Array(pkts.length);
  addon.sumSlots(inb.buf, SLOT, inb.lens, pkts.length, 20, sums);
  pkts.forEach((p, i) => assert.equal(sums[i], onesSum(p, 20, p.length - 20), `slot ${i}`));
  // Odd lengths, empty ranges.
  const odd = new PacketBatch(3, 64);
  odd.buf.fill(0xab);
  odd.lens.set([21, 20, 65]);
  const os = new Uint16Array(3).fill(1);
  addon.sumSlots(odd.buf, 64, odd.lens, 3, 20, os);
  assert.deepEqual([...os], [0xab00, 0, 0]);
  const gro = new RxCoalescer(16);
  const counts = newCoalesceCounts();
  assert.equal(gro.coalesce(inb, pkts.length, wordView(inb.buf), counts, sums), 3);
  assert.deepEqual([...gro.segs.subarray(0, 3)], [5, 1, 4]);
  assert.throws(() => addon.sumSlots(inb.buf, SLOT, inb.lens, pkts.length, 20, new Uint16Array(2)), RangeError);
});

test('property: segment checksums summed by the addon in one batch (the tx path) equal the JS sum16 ones, TCP and UDP, byte for byte', () => {
  const native = loadNative();
  const summer = newSegmentSummer(native, 4);
  let x = 7;
  const r = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let seed = 0; seed < 200; seed++) {
    const mss = 1 + Math.floor(r() * 1460);
    const payload = Math.min(65535 - 52, Math.floor(r() * mss * 60));
    const flags = [ACK, ACK | PSH, ACK | FIN | PSH, ACK | ECE][seed % 4]!;
    const tcp = superPacket(payload, flags, { sport: 1 + Math.floor(r() * 65535), seq: Math.floor(r() * 2 ** 32), id: Math.floor(r() * 65536), tos: Math.floor(r() * 256) });
    // The same bytes as an IPv4/UDP super-packet (8-byte header): UDP's computed 0 must go out as 0xffff.
    const udp = Buffer.from(tcp.subarray(0, 20 + 8 + payload));
    udp[9] = 17;
    udp.writeUInt16BE(udp.length, 2);
    udp.writeUInt16BE(udp.length - 20, 24);
    udp.writeUInt16BE(0, 26);
    for (const [sp, seg] of [[tcp, segmentTcp4], [udp, segmentUdp4]] as const) {
      const js = new PacketBatch(64, SLOT);
      const c = new PacketBatch(64, SLOT);
      const gso = Math.max(mss, Math.ceil(payload / 60) || 1);
      const a = seg(sp, 0, sp.length, gso, js, wordView(js.buf));
      const b = seg(sp, 0, sp.length, gso, c, wordView(c.buf), summer);
      assert.equal(b, a, `seed ${seed}`);
      assert.ok(a > 0, `seed ${seed}: ${a}`);
      for (let k = 0; k < a; k++) assert.deepEqual(c.buf.subarray(k * SLOT, k * SLOT + c.lens[k]!), js.buf.subarray(k * SLOT, k * SLOT + js.lens[k]!), `seed ${seed} segment ${k}`);
    }
  }
});
