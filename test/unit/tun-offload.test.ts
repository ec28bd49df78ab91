import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkIPv4, headerChecksumValid, Ipv4Check, onesSum, readU16, readU32 } from '../../src/packet/ipv4.js';
import { completeChecksum, expandFromTun, newExpandCounts, newSegmentSummer, segmentTcp4, SegmentError, sum16, VNET_HDR_LEN, wordView } from '../../src/tun/offload.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { loadNative } from '../../src/native/addon.js';

const SRC = [10, 5, 1, 2];
const DST = [10, 5, 2, 3];

/**
 * An IPv4/TCP super-packet as the kernel hands it over with TSO: one IP and
 * TCP header (here with 12 bytes of options, like a timestamp), then
 * `payload` bytes; the checksum fields hold junk, since segmentation must
 * recompute them.
 */
function superPacket(payload: number, flags: number, opts = { seq: 0xfffff000, id: 0xfffe }): Buffer {
  const ihl = 20;
  const thl = 32;
  const total = ihl + thl + payload;
  const b = Buffer.alloc(total);
  b[0] = 0x45;
  b.writeUInt16BE(total, 2);
  b.writeUInt16BE(opts.id, 4);
  b[6] = 0x40; // DF
  b[8] = 64;
  b[9] = 6;
  b.writeUInt16BE(0xbeef, 10);
  b.set(SRC, 12);
  b.set(DST, 16);
  const t = ihl;
  b.writeUInt16BE(40000, t);
  b.writeUInt16BE(5201, t + 2);
  b.writeUInt32BE(opts.seq, t + 4);
  b.writeUInt32BE(0x12345678, t + 8);
  b[t + 12] = (thl / 4) << 4;
  b[t + 13] = flags;
  b.writeUInt16BE(501, t + 14);
  b.writeUInt16BE(0xdead, t + 16);
  // Options: NOP NOP timestamp.
  b[t + 20] = 1;
  b[t + 21] = 1;
  b[t + 22] = 8;
  b[t + 23] = 10;
  for (let i = 0; i < payload; i++) b[ihl + thl + i] = (i * 7 + 13) & 255;
  return b;
}

/** Full TCP checksum verification: pseudo header + segment must sum to 0xffff. */
function tcpChecksumValid(b: Uint8Array, off: number): boolean {
  const ihl = (b[off]! & 15) * 4;
  const total = readU16(b, off + 2);
  const tcpLen = total - ihl;
  let sum = readU16(b, off + 12) + readU16(b, off + 14) + readU16(b, off + 16) + readU16(b, off + 18) + 6 + tcpLen;
  sum += onesSum(b, off + ihl, tcpLen);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

test('sum16 (word loads) equals the byte-wise onesSum for every length and alignment', () => {
  const b = Buffer.alloc(4096);
  for (let i = 0; i < b.length; i++) b[i] = (i * 131 + 7) & 255;
  const words = wordView(b);
  assert.ok(words);
  for (const off of [0, 4, 8, 2, 1, 3]) for (let len = 0; len < 80; len++) assert.equal(sum16(b, words, off, len), onesSum(b, off, len), `off ${off} len ${len}`);
  assert.equal(sum16(b, words, 0, 4096), onesSum(b, 0, 4096));
  // All 0xff: the fold must not overflow.
  const f = Buffer.alloc(65536, 0xff);
  assert.equal(sum16(f, wordView(f), 0, 65535), onesSum(f, 0, 65535));
});

test('a 64 KB TSO super-packet becomes MSS-sized segments with correct lengths, ids, seqs, flags and checksums', () => {
  const mss = 1420;
  const payload = 65535 - 52;
  const FIN = 0x01;
  const PSH = 0x08;
  const ACK = 0x10;
  const CWR = 0x80;
  const sp = superPacket(payload, ACK | PSH | FIN | CWR);
  const out = new PacketBatch(1024, 2048);
  out.count = 3; // segments are appended after what is already there
  const n = segmentTcp4(sp, 0, sp.length, mss, out, wordView(out.buf));
  assert.equal(n, Math.ceil(payload / mss));
  assert.equal(out.count, 3 + n);
  let expectedSeq = 0xfffff000;
  let reassembled = Buffer.alloc(0);
  for (let k = 0; k < n; k++) {
    const o = (3 + k) * 2048;
    const len = out.lens[3 + k]!;
    const plen = k < n - 1 ? mss : payload - mss * (n - 1);
    assert.equal(len, 52 + plen, `segment ${k} length`);
    assert.ok(len <= 1472, 'every segment fits the flannel0 MTU');
    assert.equal(checkIPv4(out.buf, o, len, true, true), Ipv4Check.Ok, `segment ${k} IPv4 header`);
    assert.ok(headerChecksumValid(out.buf, o));
    assert.equal(readU16(out.buf, o + 4), (0xfffe + k) & 0xffff, 'IP id increments (and wraps)');
    assert.equal(out.buf[o + 6], 0x40, 'DF kept');
    assert.equal(out.buf[o + 8], 64, 'TTL untouched (forwardFromTun decrements it per segment)');
    assert.equal(readU32(out.buf, o + 24), expectedSeq, `segment ${k} seq`);
    assert.equal(readU32(out.buf, o + 28), 0x12345678, 'ack number copied');
    const flags = out.buf[o + 33]!;
    assert.equal(flags & ACK, ACK);
    assert.equal(flags & CWR, k === 0 ? CWR : 0, 'CWR only on the first segment');
    assert.equal(flags & (FIN | PSH), k === n - 1 ? FIN | PSH : 0, 'FIN/PSH only on the last');
    assert.equal(out.buf[o + 42], 8, 'TCP options copied');
    assert.ok(tcpChecksumValid(out.buf, o), `segment ${k} TCP checksum`);
    expectedSeq = (expectedSeq + plen) >>> 0;
    reassembled = Buffer.concat([reassembled, out.buf.subarray(o + 52, o + len)]);
  }
  assert.deepEqual(reassembled, sp.subarray(52), 'payload reassembles exactly');
});

test('segmentation refuses malformed super-packets and reports when out has no room', () => {
  const out = new PacketBatch(8, 2048);
  const sp = superPacket(20000, 0x10);
  assert.equal(segmentTcp4(sp, 0, sp.length, 1420, out, null), SegmentError.NoRoom);
  assert.equal(out.count, 0);
  const udp = superPacket(3000, 0x10);
  udp[9] = 17;
  assert.equal(segmentTcp4(udp, 0, udp.length, 1420, new PacketBatch(8, 2048), null), SegmentError.Malformed);
  const frag = superPacket(3000, 0x10);
  frag[6] = 0x20; // MF
  assert.equal(segmentTcp4(frag, 0, frag.length, 1420, new PacketBatch(8, 2048), null), SegmentError.Malformed);
  assert.equal(segmentTcp4(sp, 0, sp.length, 4000, new PacketBatch(8, 2048), null), SegmentError.Malformed, 'segment larger than a slot');
  // A payload that fits one segment still gets its checksum fixed.
  const small = superPacket(100, 0x18);
  const one = new PacketBatch(2, 2048);
  assert.equal(segmentTcp4(small, 0, small.length, 1420, one, null), 1);
  assert.ok(tcpChecksumValid(one.buf, 0));
});

test('completeChecksum finishes a partial (pseudo-header-seeded) checksum', () => {
  const p = superPacket(333, 0x18);
  const want = Buffer.from(p);
  want.writeUInt16BE(0, 36);
  // Full checksum computed the slow way.
  let s = readU16(want, 12) + readU16(want, 14) + readU16(want, 16) + readU16(want, 18) + 6 + (want.length - 20) + onesSum(want, 20, want.length - 20);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  // The kernel leaves the folded pseudo-header sum (not inverted) in the field.
  let ph = readU16(p, 12) + readU16(p, 14) + readU16(p, 16) + readU16(p, 18) + 6 + (p.length - 20);
  while (ph > 0xffff) ph = (ph & 0xffff) + (ph >>> 16);
  p.writeUInt16BE(ph, 36);
  assert.ok(completeChecksum(p, null, 0, p.length, 20, 16));
  assert.equal(p.readUInt16BE(36), ~s & 0xffff);
  assert.ok(tcpChecksumValid(p, 0));
  assert.equal(completeChecksum(p, null, 0, p.length, p.length - 1, 0), false, 'offsets past the end');
});

test('expandFromTun: super-packets are segmented, plain packets copied, bad ones counted; stops when out is full', () => {
  const inb = new PacketBatch(4, 65536);
  const hdrs = new Uint8Array(4 * VNET_HDR_LEN);
  const put = (i: number, p: Buffer, gsoType: number, gsoSize: number, flags = 0, csumStart = 0, csumOffset = 0) => {
    inb.buf.set(p, i * 65536);
    inb.lens[i] = p.length;
    const h = Buffer.from(hdrs.buffer, i * VNET_HDR_LEN, VNET_HDR_LEN);
    h[0] = flags;
    h[1] = gsoType;
    h.writeUInt16LE(52, 2);
    h.writeUInt16LE(gsoSize, 4);
    h.writeUInt16LE(csumStart, 6);
    h.writeUInt16LE(csumOffset, 8);
  };
  put(0, superPacket(14200, 0x10), 1 | 0x80, 1420, 1, 20, 16); // TCPV4 | ECN: 10 segments
  const plain = superPacket(500, 0x18);
  let ph = readU16(plain, 12) + readU16(plain, 14) + readU16(plain, 16) + readU16(plain, 18) + 6 + (plain.length - 20);
  while (ph > 0xffff) ph = (ph & 0xffff) + (ph >>> 16);
  plain.writeUInt16BE(ph, 36); // as the kernel leaves it for NEEDS_CSUM
  put(1, plain, 0, 0, 1, 20, 16); // plain, partial checksum
  put(2, superPacket(3000, 0x10), 3, 1400); // UFO: never enabled, dropped as malformed
  put(3, superPacket(14200, 0x10), 1, 1420); // another 10 segments: does not fit an out of 16
  const counts = newExpandCounts();
  const out = new PacketBatch(16, 2048);
  const next = expandFromTun(inb, hdrs, 0, 4, out, wordView(out.buf), counts);
  assert.equal(next, 3, 'stopped before the packet that does not fit');
  assert.equal(out.count, 12);
  for (let k = 0; k < 11; k++) assert.ok(tcpChecksumValid(out.buf, k * 2048), `packet ${k}`);
  assert.equal(out.lens[11], 2049, 'unsupported GSO type marked oversize, for the caller\'s checks to count as malformed');
  assert.equal(counts.superPackets, 1);
  assert.equal(counts.segments, 10);
  out.count = 0;
  assert.equal(expandFromTun(inb, hdrs, next, 4, out, wordView(out.buf), counts), 4);
  assert.equal(out.count, 10);
  assert.equal(counts.superPackets, 2);
});

test('expandFromTun with the addon summer: runs of plain NEEDS_CSUM packets (UDP and TCP, options or not) complete exactly as one by one in JS', () => {
  const native = loadNative();
  const n = 40;
  const inb = new PacketBatch(n, 65536);
  const hdrs = new Uint8Array(n * VNET_HDR_LEN);
  let x = 11;
  const r = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < n; i++) {
    const kind = i % 5;
    // Mostly partial TCP and UDP with a 20-byte IP header; one in five a super-packet between them (a run breaks).
    const p = kind === 4 ? superPacket(4 * 1400, 0x10) : superPacket(Math.floor(r() * 1400), 0x18);
    const udp = kind === 1 || kind === 3;
    if (udp) {
      p[9] = 17;
      p.writeUInt16BE(p.length - 20, 24);
    }
    let ph = readU16(p, 12) + readU16(p, 14) + readU16(p, 16) + readU16(p, 18) + (udp ? 17 : 6) + (p.length - 20);
    while (ph > 0xffff) ph = (ph & 0xffff) + (ph >>> 16);
    const offset = udp ? 6 : 16;
    if (kind !== 4) p.writeUInt16BE(ph, 20 + offset);
    inb.buf.set(p, i * 65536);
    inb.lens[i] = p.length;
    const h = Buffer.from(hdrs.buffer, i * VNET_HDR_LEN, VNET_HDR_LEN);
    h[0] = 1;
    h[1] = kind === 4 ? 1 : 0;
    h.writeUInt16LE(52, 2);
    h.writeUInt16LE(kind === 4 ? 1400 : 0, 4);
    h.writeUInt16LE(20, 6);
    h.writeUInt16LE(kind === 4 ? 16 : offset, 8);
  }
  const js = new PacketBatch(512, 2048);
  const c = new PacketBatch(512, 2048);
  assert.equal(expandFromTun(inb, hdrs, 0, n, js, wordView(js.buf), newExpandCounts()), n);
  assert.equal(expandFromTun(inb, hdrs, 0, n, c, wordView(c.buf), newExpandCounts(), newSegmentSummer(native, 2)), n);
  assert.equal(c.count, js.count);
  for (let k = 0; k < js.count; k++) assert.deepEqual(c.buf.subarray(k * 2048, k * 2048 + c.lens[k]!), js.buf.subarray(k * 2048, k * 2048 + js.lens[k]!), `packet ${k}`);
  for (let k = 0; k < js.count; k++) if (js.buf[k * 2048 + 9] === 6) assert.ok(tcpChecksumValid(c.buf, k * 2048), `TCP packet ${k}`);
});
