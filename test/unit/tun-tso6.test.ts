/**
 * IPv6 TCP segmentation (TSO6, for devices carrying IPv6 pods): random
 * IPv6/TCP super-packets cut into segments whose payload lengths, sequence
 * numbers, flags and TCP checksums (over the IPv6 pseudo header, checked
 * here independently) are right and whose payloads join back to the
 * original; the addon's batched sums give the same bytes as JS; the
 * coalescer passes IPv6 through unglued; expandFromTun dispatches TCPV6.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { expandFromTun, newExpandCounts, newSegmentSummer, segmentTcp6, type SlotSumming, SegmentError, VNET_GSO_TCPV6, VNET_HDR_LEN, wordView } from '../../src/tun/offload.js';
import { RxCoalescer, newCoalesceCounts } from '../../src/tun/gro.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { loadNative } from '../../src/native/addon.js';

const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_CWR = 0x80;

/** An IPv6/TCP packet with `payload` bytes (TCP options of optWords * 4 bytes); checksum left 0 (a super-packet's is the kernel's partial one). */
function tcp6(payload: Buffer, flags: number, seq: number, optWords = 0): Buffer {
  const thl = 20 + optWords * 4;
  const p = Buffer.alloc(40 + thl + payload.length);
  p[0] = 0x60 | randomInt(16);
  p.writeUInt16BE(thl + payload.length, 4);
  p[6] = 6;
  p[7] = 64;
  randomBytes(32).copy(p, 8);
  const t = 40;
  p.writeUInt16BE(randomInt(65536), t);
  p.writeUInt16BE(randomInt(65536), t + 2);
  p.writeUInt32BE(seq >>> 0, t + 4);
  p.writeUInt32BE(randomInt(2 ** 31), t + 8);
  p[t + 12] = (thl / 4) << 4;
  p[t + 13] = flags;
  p.writeUInt16BE(65535, t + 14);
  for (let i = 20; i < thl; i++) p[t + i] = 1; // NOP options
  payload.copy(p, 40 + thl);
  return p;
}

/** The TCP checksum of an IPv6 packet as RFC 8200 defines it, byte by byte. */
function tcpChecksumValid(p: Buffer): boolean {
  const l4 = p.length - 40;
  let s = 6 + (l4 >>> 16) + (l4 & 0xffff);
  for (let i = 8; i < 40; i += 2) s += p.readUInt16BE(i);
  for (let i = 40; i < p.length; i += 2) s += i + 1 < p.length ? p.readUInt16BE(i) : p[i]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s === 0xffff;
}

test('TSO6: random IPv6/TCP super-packets cut into valid segments that join back to the original, in JS and with the addon\'s sums', () => {
  const native = loadNative();
  for (let round = 0; round < 200; round++) {
    const mss = 500 + randomInt(1000);
    const payload = randomBytes(randomInt(1, 60_000));
    const flags = TCP_ACK | (randomInt(2) ? TCP_PSH : 0) | (randomInt(2) ? TCP_FIN : 0) | (randomInt(2) ? TCP_CWR : 0);
    const seq = randomInt(2 ** 32);
    const sp = tcp6(payload, flags, seq, randomInt(4));
    const results: Buffer[][] = [];
    for (const summer of [undefined, newSegmentSummer(native as SlotSumming, 0)]) {
      const out = new PacketBatch(256, 2048);
      const n = segmentTcp6(sp, 0, sp.length, mss, out, wordView(out.buf), summer);
      assert.equal(n, Math.ceil(payload.length / mss));
      const segs = Array.from({ length: n }, (_, k) => Buffer.from(out.buf.subarray(k * 2048, k * 2048 + out.lens[k]!)));
      const thl = (sp[40 + 12]! >>> 4) * 4;
      let joined = Buffer.alloc(0);
      segs.forEach((g, k) => {
        assert.equal(g.readUInt16BE(4), g.length - 40, 'payload length');
        assert.ok(g.length - 40 - thl <= mss);
        assert.deepEqual(g.subarray(0, 4), sp.subarray(0, 4), 'version, class, flow label kept');
        assert.deepEqual(g.subarray(6, 40), sp.subarray(6, 40), 'next header, hop limit, addresses kept');
        assert.equal(g.readUInt32BE(44), (seq + k * mss) >>> 0, 'sequence number');
        const f = g[40 + 13]!;
        assert.equal(f & TCP_CWR, k === 0 ? flags & TCP_CWR : 0, 'CWR on the first only');
        assert.equal(f & (TCP_FIN | TCP_PSH), k === n - 1 ? flags & (TCP_FIN | TCP_PSH) : 0, 'FIN and PSH on the last only');
        assert.ok(tcpChecksumValid(g), `segment ${k} checksum`);
        joined = Buffer.concat([joined, g.subarray(40 + thl)]);
      });
      assert.deepEqual(joined, payload);
      results.push(segs);
    }
    assert.deepEqual(results[0], results[1], 'JS and addon sums give the same bytes');
  }
});

test('TSO6 refuses what is not one: not IPv6, not TCP, a payload length beyond the read, no room', () => {
  const sp = tcp6(randomBytes(5000), TCP_ACK, 1);
  const out = () => new PacketBatch(64, 2048);
  const v4 = Buffer.from(sp);
  v4[0] = 0x45;
  assert.equal(segmentTcp6(v4, 0, v4.length, 1400, out(), null), SegmentError.Malformed);
  const udp = Buffer.from(sp);
  udp[6] = 17;
  assert.equal(segmentTcp6(udp, 0, udp.length, 1400, out(), null), SegmentError.Malformed);
  assert.equal(segmentTcp6(sp, 0, sp.length - 10, 1400, out(), null), SegmentError.Malformed);
  assert.equal(segmentTcp6(sp, 0, sp.length, 1400, new PacketBatch(2, 2048), null), SegmentError.NoRoom);
});

test('expandFromTun cuts GSO_TCPV6 reads; the coalescer glues the segments back into one GSO_TCPV6 write that cuts into the same bytes', () => {
  for (let round = 0; round < 50; round++) {
    const mss = 500 + randomInt(1000);
    const sp = tcp6(randomBytes(randomInt(mss * 2, 40_000)), TCP_ACK | (randomInt(2) ? TCP_PSH : 0), randomInt(2 ** 32), randomInt(4));
    const inb = new PacketBatch(2, 65536);
    sp.copy(inb.buf, 0);
    inb.lens[0] = sp.length;
    const hdrs = new Uint8Array(2 * VNET_HDR_LEN);
    hdrs[1] = VNET_GSO_TCPV6;
    hdrs[4] = mss & 0xff;
    hdrs[5] = mss >> 8;
    const out = new PacketBatch(128, 2048);
    const counts = newExpandCounts();
    assert.equal(expandFromTun(inb, hdrs, 0, 1, out, wordView(out.buf), counts), 1);
    const nseg = Math.ceil((sp.length - 40 - ((sp[52]! >>> 4) * 4)) / mss);
    assert.deepEqual([out.count, counts.superPackets, counts.segments, counts.malformed], [nseg, 1, nseg, 0]);

    const c = new RxCoalescer(128);
    const cc = newCoalesceCounts();
    assert.equal(c.coalesce(out, out.count, wordView(out.buf), cc), 1, 'one write');
    assert.deepEqual([cc.superPackets, cc.coalescedSegments], [1, nseg]);
    const h = c.hdrs;
    assert.deepEqual([h[0], h[1], h[6], h[8]], [1, VNET_GSO_TCPV6, 40, 16], 'NEEDS_CSUM, GSO_TCPV6, csum_start 40, csum_offset 16');
    assert.equal(h[4]! | (h[5]! << 8), mss);
    // The kernel would cut it at gso_size: do so, with its partial checksum treated as segmentTcp6 treats the kernel's.
    const glued = Buffer.from(c.out.buf.subarray(0, c.out.lens[0]!));
    assert.equal(glued.readUInt16BE(4), glued.length - 40);
    const again = new PacketBatch(128, 2048);
    assert.equal(segmentTcp6(glued, 0, glued.length, mss, again, wordView(again.buf)), nseg);
    for (let k = 0; k < nseg; k++) assert.deepEqual(again.buf.subarray(k * 2048, k * 2048 + again.lens[k]!), out.buf.subarray(k * 2048, k * 2048 + out.lens[k]!), `segment ${k}`);
  }
  // A corrupt segment, another flow or a non-TCP IPv6 packet goes alone and closes nothing it should not.
  const a = tcp6(randomBytes(3000), TCP_ACK, 1);
  const inb = new PacketBatch(1, 65536);
  a.copy(inb.buf, 0);
  inb.lens[0] = a.length;
  const hdrs = new Uint8Array(VNET_HDR_LEN);
  hdrs[1] = VNET_GSO_TCPV6;
  hdrs[4] = 1000 & 0xff;
  hdrs[5] = 1000 >> 8;
  const out = new PacketBatch(8, 2048);
  expandFromTun(inb, hdrs, 0, 1, out, wordView(out.buf), newExpandCounts());
  out.buf[1 * 2048 + 100]! ^= 1; // segment 1 corrupt
  const c = new RxCoalescer(8);
  assert.equal(c.coalesce(out, 3, wordView(out.buf), newCoalesceCounts()), 3, 'first alone (its flow closed by the corrupt one), corrupt alone, third alone');
});
