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
 */
import { readU16, readU32, writeU16 } from '../packet/ipv4.js';
import { sum16, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN } from './offload.js';
import { PacketBatch } from './packet-batch.js';

/** Slot of a super-packet: the largest IPv4 packet (total length is 16 bits) fits. */
export const SUPER_SLOT = 65536;
const MAX_IP_LEN = 65535;

const PROTO_TCP = 6;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
/** Offset of the checksum field in the TCP header (virtio csum_offset). */
const TCP_CSUM_OFFSET = 16;

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Flow key hash (addresses + ports); collisions are harmless: appending re-checks the full headers. */
function flowHash(buf: Uint8Array, off: number, tcp: number): number {
  const src = readU32(buf, off + 12);
  const dst = readU32(buf, off + 16);
  const ports = readU32(buf, tcp);
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
  /** Flow hash -> out slot of that flow's latest super-packet candidate (this batch only). */
  private readonly flows = new Map<number, number>();

  constructor(readonly capacity: number) {
    this.out = new PacketBatch(capacity, SUPER_SLOT);
    this.outWords = new Uint32Array(this.out.buf.buffer, this.out.buf.byteOffset, this.out.buf.byteLength >>> 2);
    this.hdrs = new Uint8Array(capacity * VNET_HDR_LEN);
    this.segs = new Uint32Array(capacity);
    this.gsoSize = new Uint32Array(capacity);
    this.nextSeq = new Uint32Array(capacity);
    this.nextId = new Uint16Array(capacity);
    this.hdrLen = new Uint16Array(capacity);
    this.open = new Uint8Array(capacity);
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
    const ob = out.buf;
    const flows = this.flows;
    flows.clear();
    out.count = 0;
    for (let i = 0; i < n; i++) {
      const off = i * slotSize;
      const len = lens[i]!;
      const ihl = (buf[off]! & 0x0f) * 4;
      let hash = 0;
      let tcpFlow = false;
      let candidate = false;
      let thl = 0;
      let plen = 0;
      if (buf[off + 9] === PROTO_TCP && ihl + 20 <= len) {
        const tcp = off + ihl;
        hash = flowHash(buf, off, tcp);
        tcpFlow = true;
        thl = (buf[tcp + 12]! >>> 4) * 4;
        plen = len - ihl - thl;
        candidate =
          ihl === 20 &&
          thl >= 20 &&
          plen > 0 &&
          (readU16(buf, off + 6) & 0xbfff) === 0 && // no MF, offset 0 (DF allowed)
          (buf[tcp + 13]! & ~TCP_PSH) === TCP_ACK &&
          this.tcpChecksumValid(buf, inWords, off, len, sums === null ? -1 : sums[i]!);
      }
      if (!candidate) {
        // Anything else goes alone; for a TCP packet it also closes its flow's candidate, to keep order.
        if (tcpFlow) flows.delete(hash);
        this.single(buf, off, len);
        continue;
      }
      const tcp = off + ihl;
      const seq = readU32(buf, tcp + 4);
      const id = readU16(buf, off + 4);
      const k = flows.get(hash);
      if (k !== undefined && this.canAppend(k, buf, off, thl, plen, seq, id)) {
        const o = k * SUPER_SLOT;
        const at = out.lens[k]!;
        buf.copy(ob, o + at, off + 20 + thl, off + len);
        out.lens[k] = at + plen;
        this.segs[k]! += 1;
        this.nextSeq[k] = (seq + plen) >>> 0;
        this.nextId[k] = (id + 1) & 0xffff;
        const psh = (buf[tcp + 13]! & TCP_PSH) !== 0;
        if (psh) ob[o + 20 + 13] = ob[o + 20 + 13]! | TCP_PSH;
        // A short segment or PSH ends a super-packet (only the last segment may be either).
        if (psh || plen < this.gsoSize[k]! || at + plen + this.gsoSize[k]! > MAX_IP_LEN) this.open[k] = 0;
        continue;
      }
      const s = this.single(buf, off, len);
      this.gsoSize[s] = plen;
      this.nextSeq[s] = (seq + plen) >>> 0;
      this.nextId[s] = (id + 1) & 0xffff;
      this.hdrLen[s] = 20 + thl;
      this.open[s] = (buf[tcp + 13]! & TCP_PSH) === 0 && len + plen <= MAX_IP_LEN ? 1 : 0;
      flows.set(hash, s);
    }
    this.finish(counts);
    return out.count;
  }

  /** Copy one packet into the next out slot as a plain write; returns the slot. */
  private single(buf: Buffer, off: number, len: number): number {
    const out = this.out;
    const s = out.count;
    buf.copy(out.buf, s * SUPER_SLOT, off, off + len);
    out.lens[s] = len;
    this.segs[s] = 1;
    this.open[s] = 0;
    out.count = s + 1;
    return s;
  }

  /** Whether the segment (buf, off) continues super-packet candidate k exactly. */
  private canAppend(k: number, buf: Buffer, off: number, thl: number, plen: number, seq: number, id: number): boolean {
    if (this.open[k] === 0 || this.hdrLen[k] !== 20 + thl || plen > this.gsoSize[k]! || seq !== this.nextSeq[k] || id !== this.nextId[k]) return false;
    const ob = this.out.buf;
    const o = k * SUPER_SLOT;
    if (this.out.lens[k]! + plen > MAX_IP_LEN) return false;
    // IP: version/ihl, TOS; flags/fragment word, TTL, protocol; addresses. (Length, id, checksum differ.)
    if (ob[o] !== buf[off] || ob[o + 1] !== buf[off + 1]) return false;
    for (let b = 6; b < 10; b++) if (ob[o + b] !== buf[off + b]) return false;
    for (let b = 12; b < 20; b++) if (ob[o + b] !== buf[off + b]) return false;
    // TCP: everything but seq (4..7), flags (13, checked: ACK with optional PSH) and checksum (16..17).
    const t = o + 20;
    const u = off + 20;
    for (let b = 0; b < 4; b++) if (ob[t + b] !== buf[u + b]) return false;
    for (let b = 8; b < 13; b++) if (ob[t + b] !== buf[u + b]) return false;
    if (ob[t + 14] !== buf[u + 14] || ob[t + 15] !== buf[u + 15]) return false;
    for (let b = 18; b < thl; b++) if (ob[t + b] !== buf[u + b]) return false;
    return true;
  }

  /**
   * Full TCP checksum check of one received segment (pseudo header + header
   * + payload). `sum` is the sum of bytes [20, len) when the caller had the
   * addon compute it (sumSlots, ~8x cheaper than JS here), else -1.
   */
  private tcpChecksumValid(buf: Buffer, words: Uint32Array | null, off: number, len: number, sum: number): boolean {
    const tcpLen = len - 20;
    const pseudo = readU16(buf, off + 12) + readU16(buf, off + 14) + readU16(buf, off + 16) + readU16(buf, off + 18) + PROTO_TCP + tcpLen;
    return fold(pseudo + (sum >= 0 ? sum : sum16(buf, words, off + 20, tcpLen))) === 0xffff;
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
      writeU16(ob, o + 2, total);
      writeU16(ob, o + 10, 0);
      writeU16(ob, o + 10, ~sum16(ob, outWords, o, 20) & 0xffff);
      const tcpLen = total - 20;
      const pseudo = readU16(ob, o + 12) + readU16(ob, o + 14) + readU16(ob, o + 16) + readU16(ob, o + 18) + PROTO_TCP + tcpLen;
      writeU16(ob, o + 20 + TCP_CSUM_OFFSET, fold(pseudo));
      const hdrLen = this.hdrLen[s]!;
      const gso = this.gsoSize[s]!;
      hdrs[h] = VNET_F_NEEDS_CSUM;
      hdrs[h + 1] = VNET_GSO_TCPV4;
      hdrs[h + 2] = hdrLen & 0xff;
      hdrs[h + 3] = hdrLen >>> 8;
      hdrs[h + 4] = gso & 0xff;
      hdrs[h + 5] = gso >>> 8;
      hdrs[h + 6] = 20; // csum_start: the TCP header
      hdrs[h + 7] = 0;
      hdrs[h + 8] = TCP_CSUM_OFFSET;
      hdrs[h + 9] = 0;
      counts.superPackets += 1;
      counts.coalescedSegments += nseg;
    }
  }
}
