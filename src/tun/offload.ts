/**
 * TUN offloads for a userspace dataplane (the approach wireguard-go takes on
 * Linux). With IFF_VNET_HDR + TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4) the
 * kernel stops segmenting TCP for flannel0 and hands us super-packets of up
 * to 64 KB, each behind a 10-byte struct virtio_net_hdr, plus packets whose
 * transport checksum is left for us to finish. One TUN read then moves ~45
 * packets' worth of data instead of one.
 *
 * The wire format does not change: flannel peers expect every datagram to
 * be one ordinary IPv4 packet no larger than flannel0's MTU. So every
 * super-packet is cut here into MSS-sized IPv4/TCP packets, exactly as the
 * kernel's software GSO would have done, and each segment then goes through
 * the caller's normal per-packet checks (for udp: routing, TTL, ICMP errors,
 * counters) like any packet read without offloads.
 *
 * This module knows nothing of any backend: it reports what it did as
 * counts (ExpandCounts) for the caller to fold into its own counters.
 *
 * Checksums are summed with 32-bit little-endian loads over a Uint32Array
 * view (one load per 4 bytes instead of two byte loads per 2), which works
 * because the one's-complement sum is byte-order independent (RFC 1071):
 * summing byte-swapped 16-bit words yields the byte-swapped sum.
 */
import { checkIPv4, onesSum, readU16, readU32, writeU16, writeU32 } from '../packet/ipv4.js';
import type { PacketBatch } from './packet-batch.js';

/** sizeof(struct virtio_net_hdr) without the MRG_RXBUF field. */
export const VNET_HDR_LEN = 10;

/** TUNSETOFFLOAD flags (linux/if_tun.h). USO4 and USO6 (kernel 6.2+) only come as a pair. */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, USO4: 0x20, USO6: 0x40 } as const;

/** What we ask for: partial checksums and IPv4 TSO (with ECN: CWR is handled per segment). TSO6 only for devices carrying IPv6 pods (TUN_OFFLOADS_TSO6). */
export const TUN_OFFLOADS = TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO_ECN;
/**
 * With UDP segmentation offload as well: an application sending with
 * UDP_SEGMENT (QUIC stacks do) hands us its run of datagrams as one
 * super-packet, and received UDP datagrams of one flow are written back as
 * one. The kernel accepts USO only for IPv4 and IPv6 together; an IPv6
 * super-packet is dropped as any IPv6 packet is (the udp backend is IPv4 only).
 */
export const TUN_OFFLOADS_USO = TUN_OFFLOADS | TUN_F.USO4 | TUN_F.USO6;
/**
 * For a device that carries IPv6 pods (the wireguard backend's
 * flannel-wg-v6 and its one-device Modes): IPv6 TCP super-packets too
 * (segmentTcp6). No USO there: UDP super-packets are cut for IPv4 only.
 */
export const TUN_OFFLOADS_TSO6 = TUN_OFFLOADS | TUN_F.TSO6;

/** virtio_net_hdr.flags / gso_type values (linux/virtio_net.h). */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_UDP_L4 = 5;
export const VNET_GSO_ECN = 0x80;

export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * A Uint32Array over the same memory as `buf` when it is 4-byte aligned
 * (true for Buffer.alloc'ed slot buffers), else null (callers then use the
 * byte-wise onesSum).
 */
export function wordView(buf: Uint8Array): Uint32Array | null {
  if (buf.byteOffset & 3) return null;
  return new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
}

/**
 * onesSum (ipv4.ts) of `len` bytes at `off`, folded to 16 bits, not
 * inverted; fast when `words` views `buf` and `off` is 4-aligned.
 * Measured on the bench machine (node 20, 1420 B, loaded box): 0.90 µs vs
 * 1.67 µs for onesSum; that is most of the tx worker's ~1 µs of user time
 * per segment, so moving checksums to C is the next step if JS shows up.
 */
export function sum16(buf: Uint8Array, words: Uint32Array | null, off: number, len: number): number {
  if (words === null || (off & 3) !== 0) return onesSum(buf, off, len);
  let acc = 0;
  const first = off >>> 2;
  const end = first + (len >>> 2);
  for (let w = first; w < end; w++) acc += words[w]!;
  // Tail bytes: an even position relative to `off` is the low byte of a little-endian 16-bit word.
  const stop = off + len;
  for (let p = end << 2, k = 0; p < stop; p++, k++) acc += (k & 1) === 0 ? buf[p]! : buf[p]! << 8;
  // acc < 2^53: fold modulo 0xffff (65536 = 1 mod 0xffff) without 32-bit overflow.
  while (acc > 0xffff) acc = (acc % 65536) + Math.floor(acc / 65536);
  return ((acc & 0xff) << 8) | (acc >>> 8);
}

/** A one's-complement sum folded to 16 bits (not inverted). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** virtio_net_hdr fields; 16-bit fields are little-endian (TUN on a little-endian host without TUNSETVNETBE). */
export function vnetFlags(hdrs: Uint8Array, i: number): number {
  return hdrs[i * VNET_HDR_LEN]!;
}
export function vnetGsoType(hdrs: Uint8Array, i: number): number {
  return hdrs[i * VNET_HDR_LEN + 1]!;
}
function le16(b: Uint8Array, off: number): number {
  return b[off]! | (b[off + 1]! << 8);
}
export function vnetGsoSize(hdrs: Uint8Array, i: number): number {
  return le16(hdrs, i * VNET_HDR_LEN + 4);
}
export function vnetCsumStart(hdrs: Uint8Array, i: number): number {
  return le16(hdrs, i * VNET_HDR_LEN + 6);
}
export function vnetCsumOffset(hdrs: Uint8Array, i: number): number {
  return le16(hdrs, i * VNET_HDR_LEN + 8);
}

/**
 * Finish a checksum the kernel left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM):
 * the field at start + offset already holds the pseudo-header sum, so the
 * checksum is the inverted sum of everything from `start` to the end.
 * Returns false when the offsets do not fit the packet.
 */
export function completeChecksum(buf: Uint8Array, words: Uint32Array | null, off: number, len: number, start: number, offset: number): boolean {
  if (start + offset + 2 > len) return false;
  const field = off + start + offset;
  const s = sum16(buf, words, off + start, len - start);
  writeU16(buf, field, ~s & 0xffff);
  return true;
}

/** What expandFromTun did: TCP super-packets cut, segments made, packets dropped as unexpandable. */
export interface ExpandCounts {
  /** Super-packets cut (TCP and UDP). */
  superPackets: number;
  /** Of those, UDP ones (USO). */
  udpSuperPackets: number;
  segments: number;
  malformed: number;
}

export function newExpandCounts(): ExpandCounts {
  return { superPackets: 0, udpSuperPackets: 0, segments: 0, malformed: 0 };
}

/**
 * Most segments one super-packet may expand into: the capacity of a segment
 * batch (udpSend's limit, UIO_MAXIOV). A device opened with offloads gets
 * gso_max_segs set to this, so the kernel's TCP never builds a bigger one,
 * even with the smallest MSS Linux allows (48 bytes: ~1,800 segments per 64 KB).
 */
export const MAX_SEGMENTS = 1024;

/** Ways segmentation can refuse a super-packet. */
export const enum SegmentError {
  Malformed = -1,
  /** Not enough free slots in `out`: flush and retry. */
  NoRoom = -2,
}

/** Segments a TCP super-packet of `len` bytes and MSS `gsoSize` turns into (upper bound when malformed). */
export function segmentCount(len: number, gsoSize: number): number {
  return gsoSize > 0 ? Math.ceil(len / gsoSize) : 1;
}

/**
 * What both segmenters check first: a well-formed IPv4 packet of protocol
 * `proto` that is not a fragment (a fragment cannot be a GSO packet).
 * Returns its IP header length, or -1.
 */
function superPacketIhl(src: Uint8Array, off: number, len: number, proto: number): number {
  if (checkIPv4(src, off, len, false, false) !== 0) return -1;
  if (src[off + 9] !== proto || (readU16(src, off + 6) & 0x3fff) !== 0) return -1;
  return (src[off]! & 0x0f) * 4;
}

/**
 * How many segments a super-packet of `total` bytes with `hdrLen` bytes of
 * headers cuts into at `gsoSize`, checked against `out`'s slots; or a
 * SegmentError.
 */
function plannedSegments(total: number, hdrLen: number, gsoSize: number, out: PacketBatch): number {
  if (hdrLen > total || gsoSize <= 0) return SegmentError.Malformed;
  const payload = total - hdrLen;
  const nseg = payload === 0 ? 1 : Math.ceil(payload / gsoSize);
  if (hdrLen + Math.min(gsoSize, payload) > out.slotSize) return SegmentError.Malformed;
  if (out.count + nseg > out.capacity) return SegmentError.NoRoom;
  return nseg;
}

/** Unfolded pseudo-header sum of an IPv4 packet's addresses and `proto`; callers add the transport length (per segment, or of a whole super-packet). */
export function pseudoSum(src: Uint8Array, off: number, proto: number): number {
  return readU16(src, off + 12) + readU16(src, off + 14) + readU16(src, off + 16) + readU16(src, off + 18) + proto;
}

/** Copy src[from, to) to dst at `at` (Buffer#copy takes any Uint8Array as its source). */
const bufferCopy = Buffer.prototype.copy;
function copyBytes(src: Uint8Array, dst: Buffer, at: number, from: number, to: number): void {
  bufferCopy.call(src, dst, at, from, to);
}

/**
 * Ones-complement sums of slots [0, count) of `buf` from byte `start` to
 * each slot's length, into `sums` (the addon's sumSlots).
 */
export type SlotSummer = (buf: Buffer, slotSize: number, lens: Uint32Array, count: number, start: number, sums: Uint16Array) => void;

/**
 * Segment k of a super-packet into the slot at `o` of `dst`: the headers
 * (hdrLen bytes at off) and payload bytes [p, p + plen) after them, with the
 * segment's IPv4 total length, id (id0 + k) and header checksum. The
 * transport header is the caller's to finish.
 */
function copySegment(src: Uint8Array, off: number, hdrLen: number, ihl: number, id0: number, k: number, p: number, plen: number, dst: Buffer, o: number, outWords: Uint32Array | null): void {
  // Buffer#copy with offsets: no subarray views allocated per segment (two per segment were 5 % of the tx worker's profile).
  copyBytes(src, dst, o, off, off + hdrLen);
  if (plen > 0) copyBytes(src, dst, o + hdrLen, off + hdrLen + p, off + hdrLen + p + plen);
  writeU16(dst, o + 2, hdrLen + plen);
  writeU16(dst, o + 4, (id0 + k) & 0xffff);
  writeU16(dst, o + 10, 0);
  writeU16(dst, o + 10, ~sum16(dst, outWords, o, ihl) & 0xffff);
}

/**
 * Cut the IPv4/TCP super-packet at (src, off, len) into segments carrying at
 * most `gsoSize` payload bytes each, appended to `out` from slot out.count
 * (which this advances). Each segment is a complete packet as the kernel's
 * software GSO would make it: IP total length, id (+1 per segment) and
 * header checksum; TCP sequence number; CWR kept only on the first segment,
 * FIN and PSH only on the last; the full TCP checksum (pseudo header
 * included) recomputed. Returns the number of segments or a SegmentError.
 */
export function segmentTcp4(src: Uint8Array, off: number, len: number, gsoSize: number, out: PacketBatch, outWords: Uint32Array | null, summer?: SegmentSummer): number {
  const ihl = superPacketIhl(src, off, len, PROTO_TCP);
  if (ihl < 0) return SegmentError.Malformed;
  const total = readU16(src, off + 2);
  const tcp = off + ihl;
  if (total < ihl + 20) return SegmentError.Malformed;
  const thl = (src[tcp + 12]! >>> 4) * 4;
  if (thl < 20) return SegmentError.Malformed;
  return cutTcp(src, off, ihl, thl, total, gsoSize, out, outWords, summer, pseudoSum(src, off, PROTO_TCP), false);
}

/**
 * The TCP segments of a checked super-packet (IP header of ipLen bytes, TCP
 * header of thl, `total` bytes in all) into `out`: headers and payload
 * copied, the IP header made the segment's (IPv4: total length, id + k,
 * header checksum; IPv6: payload length), sequence number, flags (CWR on
 * the first only, FIN and PSH on the last only) and the TCP checksum from
 * `pseudo` (the pseudo-header sum without the length). Returns the segments
 * or a SegmentError.
 */
function cutTcp(src: Uint8Array, off: number, ipLen: number, thl: number, total: number, gsoSize: number, out: PacketBatch, outWords: Uint32Array | null, summer: SegmentSummer | undefined, pseudo: number, ipv6: boolean): number {
  const hdrLen = ipLen + thl;
  const nseg = plannedSegments(total, hdrLen, gsoSize, out);
  if (nseg < 0) return nseg;
  const payload = total - hdrLen;
  const slot = out.slotSize;
  const dst = out.buf;
  const tcp = off + ipLen;
  const id0 = ipv6 ? 0 : readU16(src, off + 4);
  const seq0 = readU32(src, tcp + 4);
  const flags = src[tcp + 13]!;
  const first = out.count;
  let base = first;
  for (let k = 0; k < nseg; k++, base++) {
    const o = base * slot;
    const p = k * gsoSize;
    const plen = Math.min(gsoSize, payload - p);
    if (ipv6) {
      copyBytes(src, dst, o, off, off + hdrLen);
      if (plen > 0) copyBytes(src, dst, o + hdrLen, off + hdrLen + p, off + hdrLen + p + plen);
      writeU16(dst, o + 4, thl + plen);
    } else {
      copySegment(src, off, hdrLen, ipLen, id0, k, p, plen, dst, o, outWords);
    }
    const t = o + ipLen;
    writeU32(dst, t + 4, (seq0 + p) >>> 0);
    let f = flags;
    if (k > 0) f &= ~TCP_CWR;
    if (k < nseg - 1) f &= ~(TCP_FIN | TCP_PSH);
    dst[t + 13] = f;
    writeU16(dst, t + 16, 0);
    out.lens[base] = hdrLen + plen;
    if (!summer) writeU16(dst, t + 16, ~fold(pseudo + (thl + plen) + sum16(dst, outWords, t, thl + plen)) & 0xffff);
  }
  if (summer) finishChecksums(summer, out, first, nseg, ipLen, pseudo, 16);
  out.count = base;
  return nseg;
}

/** Unfolded pseudo-header sum of an IPv6 packet's addresses and `proto` (RFC 8200 8.1); callers add the upper-layer length. */
export function pseudoSum6(src: Uint8Array, off: number, proto: number): number {
  let s = proto;
  for (let a = off + 8; a < off + 40; a += 2) s += readU16(src, a);
  return s;
}

const IPV6_HEADER = 40;

/**
 * segmentTcp4 for IPv6: the super-packet at (src, off, len) is a fixed
 * 40-byte IPv6 header (no extension headers: the kernel's TCP adds none)
 * and TCP; each segment gets its payload length, sequence number, the same
 * flag rules and a TCP checksum over the IPv6 pseudo header. IPv6 has no
 * header checksum and no id to step.
 */
export function segmentTcp6(src: Uint8Array, off: number, len: number, gsoSize: number, out: PacketBatch, outWords: Uint32Array | null, summer?: SegmentSummer): number {
  if (len < IPV6_HEADER + 20 || src[off]! >>> 4 !== 6 || src[off + 6] !== PROTO_TCP) return SegmentError.Malformed;
  const plen0 = readU16(src, off + 4);
  // A payload length of 0 on a packet that has one is a jumbogram (BIG TCP): the read length says how long.
  const total = plen0 === 0 ? len : IPV6_HEADER + plen0;
  if (total > len) return SegmentError.Malformed;
  const tcp = off + IPV6_HEADER;
  const thl = (src[tcp + 12]! >>> 4) * 4;
  if (thl < 20 || IPV6_HEADER + thl > total) return SegmentError.Malformed;
  return cutTcp(src, off, IPV6_HEADER, thl, total, gsoSize, out, outWords, summer, pseudoSum6(src, off, PROTO_TCP), true);
}

/** Whatever sums slots in one call: the addon (its sumSlots). */
export interface SlotSumming {
  sumSlots: SlotSummer;
}

/**
 * The addon's batched sum and its scratch: one call sums every segment of a
 * super-packet. Made whole by newSegmentSummer, so every summer has one
 * shape from the start and code compiled for one serves the next (a
 * field added on first use would change the shape under it).
 */
export interface SegmentSummer {
  /** Called as a method of the addon itself: one call target, whichever device. */
  by: SlotSumming;
  sums: Uint16Array;
  /** expandFromTun's batched completion of plain packets' checksums. */
  pending: PendingChecksums;
}

export function newSegmentSummer(by: SlotSumming, size = 64): SegmentSummer {
  const s = { by, sums: new Uint16Array(size), pending: null as unknown as PendingChecksums };
  s.pending = new PendingChecksums(s);
  return s;
}

/** One addon call: sums[k] = ones-sum of slot first + k of `out` from byte `start` to its length, for k < n. */
function sumRun(summer: SegmentSummer, out: PacketBatch, first: number, n: number, start: number): Uint16Array {
  let sums = summer.sums;
  if (sums.length < n) sums = summer.sums = new Uint16Array(n);
  summer.by.sumSlots(out.buf.subarray(first * out.slotSize), out.slotSize, out.lens.subarray(first), n, start, sums);
  return sums;
}

/**
 * Fill the L4 checksum (at `csumAt` in the L4 header) of segments
 * [first, first + n) of `out`, whose checksum fields are still 0: one
 * batched sum of each segment's L4 bytes, then the pseudo-header and length
 * in JS. Measured (`node dist/bench/profile.js`, one TCP stream, two runs
 * each): the sending daemon's user time per datagram 1.53-1.62 us with
 * sum16 per segment in JS, 1.00-1.12 us with this; its total CPU per
 * datagram 2.57-2.90 us against 2.11-2.36.
 */
function finishChecksums(summer: SegmentSummer, out: PacketBatch, first: number, n: number, ihl: number, pseudo: number, csumAt: number): void {
  const slot = out.slotSize;
  const sums = sumRun(summer, out, first, n, ihl);
  for (let k = 0; k < n; k++) {
    const o = (first + k) * slot;
    const l4 = out.lens[first + k]! - ihl;
    let sum = ~fold(pseudo + l4 + sums[k]!) & 0xffff;
    // UDP sends a computed 0 as 0xffff (RFC 768); TCP's never is 0 here unless it is the value.
    if (sum === 0 && csumAt === 6) sum = 0xffff;
    writeU16(out.buf, o + ihl + csumAt, sum);
  }
}

/**
 * Cut the IPv4/UDP super-packet at (src, off, len) into datagrams of at
 * most `gsoSize` payload bytes each (the last may be shorter), appended to
 * `out` as segmentTcp4 does, as the kernel's UDP GSO would make them: IP
 * total length, id (+1 per datagram) and header checksum; UDP length and
 * the full UDP checksum (0 sent as 0xffff, RFC 768). Returns the number of
 * datagrams or a SegmentError.
 */
export function segmentUdp4(src: Uint8Array, off: number, len: number, gsoSize: number, out: PacketBatch, outWords: Uint32Array | null, summer?: SegmentSummer): number {
  const ihl = superPacketIhl(src, off, len, PROTO_UDP);
  if (ihl < 0) return SegmentError.Malformed;
  const total = readU16(src, off + 2);
  const hdrLen = ihl + 8;
  const nseg = plannedSegments(total, hdrLen, gsoSize, out);
  if (nseg < 0) return nseg;
  const payload = total - hdrLen;
  const slot = out.slotSize;

  const dst = out.buf;
  const id0 = readU16(src, off + 4);
  const pseudo = pseudoSum(src, off, PROTO_UDP);
  const first = out.count;
  let base = first;
  for (let k = 0; k < nseg; k++, base++) {
    const o = base * slot;
    const p = k * gsoSize;
    const plen = Math.min(gsoSize, payload - p);
    copySegment(src, off, hdrLen, ihl, id0, k, p, plen, dst, o, outWords);
    const u = o + ihl;
    writeU16(dst, u + 4, 8 + plen);
    writeU16(dst, u + 6, 0);
    out.lens[base] = hdrLen + plen;
    if (!summer) {
      const sum = ~fold(pseudo + (8 + plen) + sum16(dst, outWords, u, 8 + plen)) & 0xffff;
      writeU16(dst, u + 6, sum === 0 ? 0xffff : sum);
    }
  }
  if (summer) finishChecksums(summer, out, first, nseg, ihl, pseudo, 6);
  out.count = base;
  return nseg;
}

/**
 * Turn TUN reads [from, n) of `inb` (vnet headers in `hdrs`) into plain
 * packets in `out`, from out.count on: super-packets are segmented, others
 * copied with their partial checksum completed. Stops early when `out` has
 * no room for the next packet's segments and returns the index to resume
 * from (n when all were taken). Packets that cannot be expanded are dropped
 * and counted in `counts.malformed` (the caller counts them as read and
 * dropped, so its counters still add up); counts accumulate across calls.
 */
export function expandFromTun(
  inb: PacketBatch,
  hdrs: Uint8Array,
  from: number,
  n: number,
  out: PacketBatch,
  outWords: Uint32Array | null,
  counts: ExpandCounts,
  summer?: SegmentSummer,
): number {
  const { buf, lens, slotSize } = inb;
  const pending = summer ? summer.pending : null;
  let i = from;
  for (; i < n; i++) {
    const off = i * slotSize;
    const len = lens[i]!;
    const gsoType = vnetGsoType(hdrs, i) & ~VNET_GSO_ECN;
    if (len <= slotSize && (gsoType === VNET_GSO_TCPV4 || gsoType === VNET_GSO_TCPV6 || gsoType === VNET_GSO_UDP_L4)) {
      const gsoSize = vnetGsoSize(hdrs, i);
      if (out.count + segmentCount(len, gsoSize) > out.capacity) {
        if (out.count > 0) break;
      }
      const r = (gsoType === VNET_GSO_TCPV4 ? segmentTcp4 : gsoType === VNET_GSO_TCPV6 ? segmentTcp6 : segmentUdp4)(buf, off, len, gsoSize, out, outWords, summer);
      if (r === SegmentError.NoRoom && out.count > 0) break;
      if (r < 0) {
        counts.malformed += 1;
        continue;
      }
      counts.superPackets += 1;
      if (gsoType === VNET_GSO_UDP_L4) counts.udpSuperPackets += 1;
      counts.segments += r;
      continue;
    }
    if (out.count >= out.capacity) break;
    const slot = out.count;
    const o = slot * out.slotSize;
    if (len > slotSize || len > out.slotSize || (gsoType !== VNET_GSO_NONE && len > 0)) {
      // Too big for a segment slot, or a GSO type we never enabled: slotSize + 1 marks it for the caller's checks to drop as malformed.
      out.lens[slot] = out.slotSize + 1;
      out.count = slot + 1;
      continue;
    }
    copyBytes(buf, out.buf, o, off, off + len);
    out.lens[slot] = len;
    out.count = slot + 1;
    if ((vnetFlags(hdrs, i) & VNET_F_NEEDS_CSUM) === 0) continue;
    const start = vnetCsumStart(hdrs, i);
    const offset = vnetCsumOffset(hdrs, i);
    if (start + offset + 2 > len) out.lens[slot] = out.slotSize + 1;
    else if (pending !== null && start === pending.start) pending.add(out, slot, offset);
    else completeChecksum(out.buf, outWords, o, len, start, offset);
  }
  pending?.flush(out);
  return i;
}

/**
 * Checksums the kernel left to us (NEEDS_CSUM: a locally sent UDP datagram,
 * a TCP ACK) on plain packets copied to consecutive slots, completed with
 * one batched sum per run of such slots instead of sum16 per packet in JS.
 * Measured (`iperf3 -u -l 1400` unpaced for 5 s, two runs each):
 * expandFromTun with the JS sum inlined was 17 % of the tx worker's perf
 * samples; batched, the tx worker carried 649-685 k datagrams against
 * 572-597 k (fewer dropped at flannel0's full queue).
 */
class PendingChecksums {
  /** The checksum start this batches (an IPv4 header without options); others are done one by one. */
  readonly start = 20;
  private first = -1;
  private n = 0;
  private offsets = new Uint8Array(64);

  constructor(private readonly summer: SegmentSummer) {}

  add(out: PacketBatch, slot: number, offset: number): void {
    if (this.n > 0 && slot !== this.first + this.n) this.flush(out);
    if (this.n === 0) this.first = slot;
    if (this.n >= this.offsets.length) {
      const grown = new Uint8Array(this.offsets.length * 2);
      grown.set(this.offsets);
      this.offsets = grown;
    }
    this.offsets[this.n++] = offset;
  }

  /** Sum the run's slots from `start` (the field holds the kernel's pseudo-header sum) and write each complement. */
  flush(out: PacketBatch): void {
    const n = this.n;
    if (n === 0) return;
    this.n = 0;
    const sums = sumRun(this.summer, out, this.first, n, this.start);
    for (let k = 0; k < n; k++) writeU16(out.buf, (this.first + k) * out.slotSize + this.start + this.offsets[k]!, ~sums[k]! & 0xffff);
  }
}
