/**
 * Receive-side TCP coalescing for TUN writes (the idea of wireguard-go's
 * tcpGRO, written from the kernel's documented virtio_net_hdr contract).
 *
 * Why (measured on the udp backend): with TSO on the sender side, the receiving daemon became the limit:
 * one TUN write() per ~1.4 KB datagram, each running the inner packet
 * through the kernel's receive path synchronously (bench/PROFILE.md: rx
 * worker at ~80 % of a core, 76 % of it kernel time). A recvmmsg batch of a
 * bulk TCP flow holds dozens of consecutive segments of the same stream; the
 * kernel accepts them glued back together as one TSO super-packet behind a
 * virtio_net_hdr (GSO_TCPV4, NEEDS_CSUM), so one write replaces dozens and
 * the inner TCP receive path runs once per super-packet, as it would after
 * the kernel's own GRO on a NIC.
 *
 * What may be glued (the same rules as the kernel's tcp_gro_receive, so
 * that re-segmenting gives back exactly the packets we received): IPv4
 * without options and not fragmented, same addresses, TOS, TTL and
 * fragment-flags word, IP ids consecutive; TCP header (ports, ack, data
 * offset, window, urgent pointer, option bytes incl. timestamps) identical,
 * flags exactly ACK (PSH allowed on the last segment only), sequence numbers
 * contiguous, all segments but the last carrying exactly gso_size bytes,
 * each segment's TCP checksum verified (CHECKSUM_PARTIAL makes the kernel
 * trust the payload, so a corrupt segment must not get in; it passes
 * through alone and the kernel drops it as it would have). Everything else
 * is written unchanged behind a zeroed header. Packets of one flow keep
 * their order: a packet that cannot join its flow's open super-packet
 * closes it, so later segments of that flow cannot jump ahead of it.
 *
 * IPv6 TCP (a device carrying IPv6 pods: flannel-wg-v6) is glued by the
 * same rules on the fixed 40-byte header (no extension headers; traffic
 * class, flow label, hop limit and addresses identical; there is no id),
 * written as GSO_TCPV6.
 *
 * UDP (with USO on the device, kernel 6.2+: `udp`): datagrams of one flow
 * (same addresses, ports, TOS, TTL, fragment-flags word; consecutive IP
 * ids; all but the last with exactly gso_size payload bytes; each with a
 * verified, non-zero checksum; at most 128, the kernel's limit) become one
 * GSO_UDP_L4 super-packet, which the kernel cuts back into exactly those
 * datagrams for the receiving socket: one write instead of dozens under a
 * UDP flood.
 */
import { readU16, readU32, writeU16 } from '../packet/ipv4.js';
import { fold, PROTO_TCP, PROTO_UDP, pseudoSum, pseudoSum6, sum16, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4, VNET_HDR_LEN } from './offload.js';
import { PacketBatch } from './packet-batch.js';

/** Slot of a super-packet: the largest IPv4 packet (total length is 16 bits) fits. */
export const SUPER_SLOT = 65536;
const MAX_IP_LEN = 65535;

/** The kernel refuses a UDP super-packet of more datagrams than this (UDP_MAX_SEGMENTS). */
const UDP_MAX_SEGMENTS = 128;
/** Offset of the checksum field in the UDP header. */
const UDP_CSUM_OFFSET = 6;
/**
 * Smaller UDP datagrams are written one by one. The kernel cuts a glued
 * super-packet back for the receiving socket, and each small piece seems to
 * weigh on that socket's buffer far beyond its bytes: unpaced 64-byte iperf3
 * (3 runs each, 2-core bench machine) got 30-33 Mbit/s through with small
 * datagrams glued, 33-43 without (1400-byte runs unchanged, 0.47-0.68 Gbit/s).
 */
const UDP_GLUE_MIN_PAYLOAD = 512;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
/** Offset of the checksum field in the TCP header (virtio csum_offset). */
const TCP_CSUM_OFFSET = 16;

const IPV6_HEADER = 40;

/** flowHash for IPv6: both addresses and the ports. */
function flowHash6(buf: Uint8Array, off: number): number {
  let h = readU32(buf, off + IPV6_HEADER) ^ 0x6;
  for (let a = off + 8; a < off + 40; a += 4) h = Math.imul(h ^ readU32(buf, a), 0x9e3779b1);
  return h | 0;
}

/**
 * Whether the TCP headers (thl bytes) at a in `ab` and at b in `bb` are one
 * flow's consecutive segments' headers: everything equal but seq (4..7),
 * flags (13, checked by the caller: ACK with optional PSH) and checksum
 * (16..17).
 */
function sameTcpHeader(ab: Uint8Array, a: number, bb: Uint8Array, b: number, thl: number): boolean {
  for (let i = 0; i < 4; i++) if (ab[a + i] !== bb[b + i]) return false;
  for (let i = 8; i < 13; i++) if (ab[a + i] !== bb[b + i]) return false;
  if (ab[a + 14] !== bb[b + 14] || ab[a + 15] !== bb[b + 15]) return false;
  for (let i = 18; i < thl; i++) if (ab[a + i] !== bb[b + i]) return false;
  return true;
}

/** Flow key hash (addresses + ports); collisions are harmless: appending re-checks the full headers. */
function flowHash(buf: Uint8Array, off: number, l4: number): number {
  const src = readU32(buf, off + 12);
  const dst = readU32(buf, off + 16);
  const ports = readU32(buf, l4) ^ buf[off + 9]!;
  return (src ^ Math.imul(dst, 0x9e3779b1) ^ Math.imul(ports, 0x85ebca6b)) | 0;
}

/** What coalescing did: super-packets built and the received segments glued into them. */
export interface CoalesceCounts {
  superPackets: number;
  coalescedSegments: number;
}

export function newCoalesceCounts(): CoalesceCounts {
  return { superPackets: 0, coalescedSegments: 0 };
}

/**
 * Output side of the coalescing: up to `capacity` TUN writes per batch
 * (super-packets or single packets), each in a 64 KB slot with its
 * virtio_net_hdr in `hdrs` and the number of received datagrams it carries
 * in `segs`. Allocated once per worker.
 */
export class RxCoalescer {
  readonly out: PacketBatch;
  readonly outWords: Uint32Array;
  readonly hdrs: Uint8Array;
  readonly segs: Uint32Array;
  /** Per out slot: payload bytes per segment, next expected seq and IP id, header length, whether more may join. */
  private readonly gsoSize: Uint32Array;
  private readonly nextSeq: Uint32Array;
  private readonly nextId: Uint16Array;
  private readonly hdrLen: Uint16Array;
  private readonly open: Uint8Array;
  /** Per out slot: the candidate's protocol (TCP or UDP), and 1 for an IPv6 one. */
  private readonly proto: Uint8Array;
  private readonly ip6: Uint8Array;
  /** Flow hash -> out slot of that flow's latest super-packet candidate (this batch only). */
  private readonly flows = new Map<number, number>();

  constructor(
    readonly capacity: number,
    /** Coalesce UDP too (the device accepts GSO_UDP_L4 writes: USO). */
    readonly udp = false,
  ) {
    this.out = new PacketBatch(capacity, SUPER_SLOT);
    this.outWords = new Uint32Array(this.out.buf.buffer, this.out.buf.byteOffset, this.out.buf.byteLength >>> 2);
    this.hdrs = new Uint8Array(capacity * VNET_HDR_LEN);
    this.segs = new Uint32Array(capacity);
    this.gsoSize = new Uint32Array(capacity);
    this.nextSeq = new Uint32Array(capacity);
    this.nextId = new Uint16Array(capacity);
    this.hdrLen = new Uint16Array(capacity);
    this.open = new Uint8Array(capacity);
    this.proto = new Uint8Array(capacity);
    this.ip6 = new Uint8Array(capacity);
  }

  /**
   * Coalesce the `n` accepted packets in slots [0, n) of `batch` (already
   * validated by the caller: well-formed IPv4, exact length, header
   * checksum) into `out`. Returns out.count. Adds the super-packets built
   * and the segments that went into them to `counts`; every input packet ends up in
   * exactly one output slot (segs[] sums to n). `sums` (optional):
   * sums[i] = one's-complement sum of bytes [20, lens[i]) of slot i, from
   * the addon's sumSlots.
   */
  coalesce(batch: PacketBatch, n: number, inWords: Uint32Array | null, counts: CoalesceCounts, sums: Uint16Array | null = null): number {
    if (n > this.capacity) throw new RangeError(`batch of ${n} exceeds coalescer capacity ${this.capacity}`);
    const { buf, lens, slotSize } = batch;
    const out = this.out;
    const flows = this.flows;
    // Map.clear() allocates a new table every time: only when there is something to clear.
    if (flows.size !== 0) flows.clear();
    out.count = 0;
    for (let i = 0; i < n; i++) {
      const off = i * slotSize;
      const len = lens[i]!;
      const version = buf[off]! >>> 4;
      if (version === 6) {
        this.coalesce6(buf, inWords, off, len);
        continue;
      }
      if (version !== 4) {
        this.single(buf, off, len);
        continue;
      }
      const ihl = (buf[off]! & 0x0f) * 4;
      const proto = buf[off + 9]!;
      const l4 = off + ihl;
      const sum = sums === null ? -1 : sums[i]!;
      let hash = 0;
      let flow = false;
      let candidate = false;
      let l4hdr = 0;
      let plen = 0;
      // Options or a fragment (MF or an offset; DF is fine) never join.
      const plainIp = ihl === 20 && (readU16(buf, off + 6) & 0xbfff) === 0;
      if (proto === PROTO_TCP && ihl + 20 <= len) {
        hash = flowHash(buf, off, l4);
        flow = true;
        l4hdr = (buf[l4 + 12]! >>> 4) * 4;
        plen = len - ihl - l4hdr;
        candidate =
          plainIp && l4hdr >= 20 && plen > 0 && (buf[l4 + 13]! & ~TCP_PSH) === TCP_ACK && this.checksumValid(buf, inWords, off, len, PROTO_TCP, sum);
      } else if (proto === PROTO_UDP && this.udp && ihl + 8 <= len) {
        hash = flowHash(buf, off, l4);
        flow = true;
        l4hdr = 8;
        plen = len - ihl - 8;
        candidate =
          plainIp &&
          plen >= UDP_GLUE_MIN_PAYLOAD &&
          readU16(buf, l4 + 4) === len - ihl &&
          readU16(buf, l4 + UDP_CSUM_OFFSET) !== 0 &&
          this.checksumValid(buf, inWords, off, len, PROTO_UDP, sum);
      }
      if (!candidate) {
        // Anything else goes alone; for a TCP or UDP packet it also closes its flow's candidate, to keep order.
        if (flow) flows.delete(hash);
        this.single(buf, off, len);
        continue;
      }
      const id = readU16(buf, off + 4);
      const k = flows.get(hash);
      if (proto === PROTO_TCP) {
        const seq = readU32(buf, l4 + 4);
        if (k !== undefined && this.canAppendTcp(k, buf, off, l4hdr, plen, seq, id)) {
          const psh = (buf[l4 + 13]! & TCP_PSH) !== 0;
          this.append(k, buf, off, len, 20 + l4hdr, plen, id);
          this.nextSeq[k] = (seq + plen) >>> 0;
          if (psh) out.buf[k * SUPER_SLOT + 20 + 13] = out.buf[k * SUPER_SLOT + 20 + 13]! | TCP_PSH;
          // PSH ends a super-packet (only the last segment may carry it).
          if (psh) this.open[k] = 0;
          continue;
        }
        const s = this.startCandidate(buf, off, len, 20 + l4hdr, plen, id, PROTO_TCP);
        this.nextSeq[s] = (seq + plen) >>> 0;
        if ((buf[l4 + 13]! & TCP_PSH) !== 0) this.open[s] = 0;
        flows.set(hash, s);
        continue;
      }
      if (k !== undefined && this.canAppendUdp(k, buf, off, plen, id)) {
        this.append(k, buf, off, len, 28, plen, id);
        if (this.segs[k]! >= UDP_MAX_SEGMENTS) this.open[k] = 0;
        continue;
      }
      flows.set(hash, this.startCandidate(buf, off, len, 28, plen, id, PROTO_UDP));
    }
    this.finish(counts);
    return out.count;
  }

  /** One IPv6 packet: joins its flow's open TCP super-packet, starts one, or goes alone. */
  private coalesce6(buf: Buffer, inWords: Uint32Array | null, off: number, len: number): void {
    const flows = this.flows;
    const l4 = off + IPV6_HEADER;
    const tcp = buf[off + 6] === PROTO_TCP && len >= IPV6_HEADER + 20 && IPV6_HEADER + readU16(buf, off + 4) === len;
    if (!tcp) {
      this.single(buf, off, len);
      return;
    }
    const hash = flowHash6(buf, off);
    const thl = (buf[l4 + 12]! >>> 4) * 4;
    const plen = len - IPV6_HEADER - thl;
    const candidate = thl >= 20 && plen > 0 && (buf[l4 + 13]! & ~TCP_PSH) === TCP_ACK && this.checksumValid6(buf, inWords, off, len);
    if (!candidate) {
      flows.delete(hash);
      this.single(buf, off, len);
      return;
    }
    const seq = readU32(buf, l4 + 4);
    const psh = (buf[l4 + 13]! & TCP_PSH) !== 0;
    const k = flows.get(hash);
    if (k !== undefined && this.canAppendTcp6(k, buf, off, thl, plen, seq)) {
      this.append(k, buf, off, len, IPV6_HEADER + thl, plen, 0);
      this.nextSeq[k] = (seq + plen) >>> 0;
      if (psh) {
        this.out.buf[k * SUPER_SLOT + IPV6_HEADER + 13] = this.out.buf[k * SUPER_SLOT + IPV6_HEADER + 13]! | TCP_PSH;
        this.open[k] = 0;
      }
      return;
    }
    const s = this.startCandidate(buf, off, len, IPV6_HEADER + thl, plen, 0, PROTO_TCP);
    this.ip6[s] = 1;
    this.nextSeq[s] = (seq + plen) >>> 0;
    if (psh) this.open[s] = 0;
    flows.set(hash, s);
  }

  /** canAppendTcp for IPv6: the fixed header identical but for the payload length, the TCP header but for seq, flags and checksum. */
  private canAppendTcp6(k: number, buf: Buffer, off: number, thl: number, plen: number, seq: number): boolean {
    if (this.ip6[k] !== 1 || this.open[k] === 0 || this.hdrLen[k] !== IPV6_HEADER + thl || seq !== this.nextSeq[k] || plen > this.gsoSize[k]!) return false;
    if (this.out.lens[k]! + plen > MAX_IP_LEN) return false;
    const ob = this.out.buf;
    const o = k * SUPER_SLOT;
    for (let b = 0; b < 4; b++) if (ob[o + b] !== buf[off + b]) return false;
    for (let b = 6; b < IPV6_HEADER; b++) if (ob[o + b] !== buf[off + b]) return false;
    return sameTcpHeader(ob, o + IPV6_HEADER, buf, off + IPV6_HEADER, thl);
  }

  private checksumValid6(buf: Buffer, words: Uint32Array | null, off: number, len: number): boolean {
    const l4Len = len - IPV6_HEADER;
    return fold(pseudoSum6(buf, off, PROTO_TCP) + l4Len + sum16(buf, words, off + IPV6_HEADER, l4Len)) === 0xffff;
  }

  /** Copy one packet into the next out slot as a plain write; returns the slot. */
  private single(buf: Buffer, off: number, len: number): number {
    const out = this.out;
    const s = out.count;
    buf.copy(out.buf, s * SUPER_SLOT, off, off + len);
    out.lens[s] = len;
    this.segs[s] = 1;
    this.open[s] = 0;
    this.ip6[s] = 0;
    out.count = s + 1;
    return s;
  }

  /** A packet that may start a super-packet: copied alone, remembered as its flow's open candidate. */
  private startCandidate(buf: Buffer, off: number, len: number, hdrLen: number, plen: number, id: number, proto: number): number {
    const s = this.single(buf, off, len);
    this.gsoSize[s] = plen;
    this.nextId[s] = (id + 1) & 0xffff;
    this.hdrLen[s] = hdrLen;
    this.proto[s] = proto;
    this.open[s] = len + plen <= MAX_IP_LEN ? 1 : 0;
    return s;
  }

  /** Glue the payload of the packet at (buf, off) onto super-packet k. */
  private append(k: number, buf: Buffer, off: number, len: number, hdrLen: number, plen: number, id: number): void {
    const at = this.out.lens[k]!;
    buf.copy(this.out.buf, k * SUPER_SLOT + at, off + hdrLen, off + len);
    this.out.lens[k] = at + plen;
    this.segs[k]! += 1;
    this.nextId[k] = (id + 1) & 0xffff;
    // A short segment ends a super-packet (only the last may be short), as does one more segment not fitting.
    if (plen < this.gsoSize[k]! || at + plen + this.gsoSize[k]! > MAX_IP_LEN) this.open[k] = 0;
  }

  /** The IP header fields that must match for two packets to be one flow's consecutive segments: all but length, id and checksum. */
  private sameIpHeader(k: number, buf: Buffer, off: number, plen: number, id: number): boolean {
    if (this.open[k] === 0 || plen > this.gsoSize[k]! || id !== this.nextId[k] || this.out.lens[k]! + plen > MAX_IP_LEN) return false;
    const ob = this.out.buf;
    const o = k * SUPER_SLOT;
    // Version/ihl, TOS; flags/fragment word, TTL, protocol; addresses.
    if (ob[o] !== buf[off] || ob[o + 1] !== buf[off + 1]) return false;
    for (let b = 6; b < 10; b++) if (ob[o + b] !== buf[off + b]) return false;
    for (let b = 12; b < 20; b++) if (ob[o + b] !== buf[off + b]) return false;
    return true;
  }

  /** Whether the TCP segment (buf, off) continues super-packet candidate k exactly. */
  private canAppendTcp(k: number, buf: Buffer, off: number, thl: number, plen: number, seq: number, id: number): boolean {
    if (this.ip6[k] !== 0 || this.proto[k] !== PROTO_TCP || this.hdrLen[k] !== 20 + thl || seq !== this.nextSeq[k] || !this.sameIpHeader(k, buf, off, plen, id)) return false;
    return sameTcpHeader(this.out.buf, k * SUPER_SLOT + 20, buf, off + 20, thl);
  }

  /** Whether the UDP datagram (buf, off) continues super-packet candidate k: same ports, next id, no longer than the first. */
  private canAppendUdp(k: number, buf: Buffer, off: number, plen: number, id: number): boolean {
    if (this.ip6[k] !== 0 || this.proto[k] !== PROTO_UDP || !this.sameIpHeader(k, buf, off, plen, id)) return false;
    const ob = this.out.buf;
    const t = k * SUPER_SLOT + 20;
    return ob[t] === buf[off + 20] && ob[t + 1] === buf[off + 21] && ob[t + 2] === buf[off + 22] && ob[t + 3] === buf[off + 23];
  }

  /**
   * Full TCP or UDP checksum check of one received packet (pseudo header +
   * header + payload). `sum` is the sum of bytes [20, len) when the caller
   * had the addon compute it (sumSlots, ~8x cheaper than JS here), else -1.
   */
  private checksumValid(buf: Buffer, words: Uint32Array | null, off: number, len: number, proto: number, sum: number): boolean {
    const l4Len = len - 20;
    const pseudo = pseudoSum(buf, off, proto) + l4Len;
    return fold(pseudo + (sum >= 0 ? sum : sum16(buf, words, off + 20, l4Len))) === 0xffff;
  }

  /**
   * Give every out slot its virtio_net_hdr: zero for a single packet
   * (checksums complete, nothing to do for the kernel); for a super-packet,
   * the new IP total length and header checksum, and in the TCP checksum
   * field the pseudo-header sum over the whole TCP length, not inverted:
   * what a CHECKSUM_PARTIAL skb carries and what the kernel's segmentation
   * adjusts per segment.
   */
  private finish(counts: CoalesceCounts): void {
    const { out, hdrs, outWords } = this;
    const ob = out.buf;
    for (let s = 0; s < out.count; s++) {
      const h = s * VNET_HDR_LEN;
      const nseg = this.segs[s]!;
      if (nseg === 1) {
        hdrs.fill(0, h, h + VNET_HDR_LEN);
        continue;
      }
      const o = s * SUPER_SLOT;
      const total = out.lens[s]!;
      // The super-packet's own IP header and the pseudo-header sum in its checksum field, per family.
      let gsoType: number;
      let csumStart: number;
      let csumOffset: number;
      if (this.ip6[s] === 1) {
        const l4Len = total - IPV6_HEADER;
        writeU16(ob, o + 4, l4Len);
        writeU16(ob, o + IPV6_HEADER + TCP_CSUM_OFFSET, fold(pseudoSum6(ob, o, PROTO_TCP) + l4Len));
        gsoType = VNET_GSO_TCPV6;
        csumStart = IPV6_HEADER;
        csumOffset = TCP_CSUM_OFFSET;
      } else {
        writeU16(ob, o + 2, total);
        writeU16(ob, o + 10, 0);
        writeU16(ob, o + 10, ~sum16(ob, outWords, o, 20) & 0xffff);
        const l4Len = total - 20;
        const udp = this.proto[s] === PROTO_UDP;
        const pseudo = pseudoSum(ob, o, udp ? PROTO_UDP : PROTO_TCP) + l4Len;
        if (udp) writeU16(ob, o + 20 + 4, l4Len);
        gsoType = udp ? VNET_GSO_UDP_L4 : VNET_GSO_TCPV4;
        csumStart = 20;
        csumOffset = udp ? UDP_CSUM_OFFSET : TCP_CSUM_OFFSET;
        writeU16(ob, o + 20 + csumOffset, fold(pseudo));
      }
      const hdrLen = this.hdrLen[s]!;
      const gso = this.gsoSize[s]!;
      hdrs[h] = VNET_F_NEEDS_CSUM;
      hdrs[h + 1] = gsoType;
      hdrs[h + 2] = hdrLen & 0xff;
      hdrs[h + 3] = hdrLen >>> 8;
      hdrs[h + 4] = gso & 0xff;
      hdrs[h + 5] = gso >>> 8;
      hdrs[h + 6] = csumStart; // the transport header
      hdrs[h + 7] = 0;
      hdrs[h + 8] = csumOffset;
      hdrs[h + 9] = 0;
      counts.superPackets += 1;
      counts.coalescedSegments += nseg;
    }
  }
}
