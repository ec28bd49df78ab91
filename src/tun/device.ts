/**
 * A TUN device as the packet loops see it (the role of wireguard-go's tun/):
 * `read` hands out ordinary IP packets, whatever the kernel delivered, and
 * `write` takes ordinary packets, coalescing them when that pays. Offloads
 * (IFF_VNET_HDR + TUNSETOFFLOAD) live entirely behind it: super-packets are
 * cut into segments on read (offload.ts) and TCP segments of one flow are
 * glued back into super-packets on write (gro.ts). What it did is reported
 * as counts, never as a backend's counters, so any backend can use it.
 *
 * `openTun` runs on the main thread (it creates the device and decides on
 * offloads); a `TunDevice` wraps the fd inside one packet worker thread.
 */
import type { Logger } from '../log.js';
import type { HopTunSlots, NativeAddon } from '../native/addon.js';
import { PacketBatch } from './packet-batch.js';
import { expandFromTun, newExpandCounts, newSegmentSummer, TUN_OFFLOADS, TUN_OFFLOADS_TSO6, TUN_OFFLOADS_USO, VNET_HDR_LEN, wordView, type ExpandCounts, type SegmentSummer } from './offload.js';
import { newCoalesceCounts, RxCoalescer, SUPER_SLOT, type CoalesceCounts } from './gro.js';

export interface OpenedTun {
  fd: number;
  name: string;
  /** Opened with IFF_VNET_HDR and TUNSETOFFLOAD accepted: super-packets will arrive. */
  offload: boolean;
  /** UDP segmentation offload accepted too (kernel 6.2+): UDP super-packets both ways. */
  uso: boolean;
  /** IPv6 TCP super-packets too (a device carrying IPv6 pods). */
  tso6?: boolean;
}

export interface OpenTunOptions {
  /** Ask for offloads (TSO, partial checksums). */
  offload: boolean;
  /** With offload: ask for USO as well, falling back to TCP offloads alone when the kernel refuses. */
  uso?: boolean;
  /** Open it as a multi-queue device (IFF_MULTI_QUEUE), whose further queues openTunQueue adds. */
  multiQueue?: boolean;
  /** With offload: IPv6 TSO instead of USO (the device carries IPv6 pods; UDP super-packets are cut for IPv4 only). */
  tso6?: boolean;
}

/**
 * Open (or create) TUN device `name`, with offloads when `offload` is asked
 * for and the kernel agrees. Any failure of the offload attempt falls back
 * to a plain open, so a kernel without them (or a fake addon in tests)
 * still gets a working device; a real problem (EPERM, EBUSY) then surfaces
 * from the plain open. USO falls back to TCP offloads alone (kernels
 * before 6.2 refuse it with EINVAL).
 */
export function openTun(addon: NativeAddon, name: string, o: OpenTunOptions, log: Logger): OpenedTun {
  const mq = o.multiQueue === true;
  if (o.offload && typeof addon.tunSetOffload === 'function') {
    let fd = -1;
    try {
      const t = addon.tunOpen(name, mq, true);
      fd = t.fd;
      if (o.tso6) {
        addon.tunSetOffload(fd, TUN_OFFLOADS_TSO6);
        return { fd, name: t.name, offload: true, uso: false, tso6: true };
      }
      if (o.uso) {
        try {
          addon.tunSetOffload(fd, TUN_OFFLOADS_USO);
          return { fd, name: t.name, offload: true, uso: true };
        } catch (err) {
          log.info('TUN UDP segmentation offload unavailable (kernel 6.2+), TCP offloads only', { error: (err as Error).message });
        }
      }
      addon.tunSetOffload(fd, TUN_OFFLOADS);
      return { fd, name: t.name, offload: true, uso: false };
    } catch (err) {
      log.info('TUN offloads unavailable, using the plain packet path', { error: (err as Error).message });
      if (fd >= 0) addon.close(fd);
    }
  }
  const t = addon.tunOpen(name, mq);
  return { fd: t.fd, name: t.name, offload: false, uso: false };
}

/**
 * One more queue of the multi-queue device `first` was opened as, with
 * exactly its offloads (the first open decided them; no fallback here, so
 * every queue hands out the same kind of packets).
 */
export function openTunQueue(addon: NativeAddon, first: OpenedTun): OpenedTun {
  const t = addon.tunOpen(first.name, true, first.offload);
  try {
    if (first.offload) addon.tunSetOffload(t.fd, first.tso6 ? TUN_OFFLOADS_TSO6 : first.uso ? TUN_OFFLOADS_USO : TUN_OFFLOADS);
  } catch (err) {
    addon.close(t.fd);
    throw err;
  }
  return { ...first, fd: t.fd };
}

export interface TunDeviceOptions {
  /** The fd was opened with offloads (OpenedTun.offload). */
  offload: boolean;
  /** With offload: glue received TCP segments into super-packets on write. */
  coalesce: boolean;
  /** The fd has USO (OpenedTun.uso): UDP datagrams are glued too. */
  uso?: boolean;
  /** Longest wait of one read, in ms. */
  pollMs: number;
  /** Super-packets per read with offloads. */
  superBatch?: number;
  /** Most packets one write() call is given (sizes the coalescer). */
  writeCapacity?: number;
}

/** Super-packets per read with offloads: 16 x 64 KB fills ~730 segment slots. */
const SUPER_BATCH = 16;

/** Counts of the last read() call. */
export interface TunReadCounts extends ExpandCounts {
  /** read syscalls that returned packets (0 when the call was served from held super-packets). */
  syscalls: number;
}

export class TunDevice {
  readonly offload: boolean;
  readonly coalescing: boolean;
  /** What the last read() did. */
  readonly readCounts: TunReadCounts = { ...newExpandCounts(), syscalls: 0 };
  /** What the last write() coalesced. */
  readonly writeCounts: CoalesceCounts = newCoalesceCounts();
  // Offload read side: super-packets read but not yet handed out as segments.
  private readonly superIn: PacketBatch | null;
  private readonly superHdrs: Uint8Array | null;
  private pendingFrom = 0;
  private pendingCount = 0;
  // Write side: a zeroed virtio_net_hdr per packet ("plain packet, checksum complete").
  private zeroHdrs: Uint8Array | null = null;
  private readonly coalescer: RxCoalescer | null;
  private readonly sums: Uint16Array | null;
  private lastWordsOf: Buffer | null = null;
  private lastWords: Uint32Array | null = null;
  /** Packets a read of hop.c left in the read slots (adopt): the next read() hands them out. */
  private adopted = 0;

  constructor(
    private readonly addon: NativeAddon,
    readonly fd: number,
    private readonly opts: TunDeviceOptions,
  ) {
    this.offload = opts.offload;
    this.coalescing = opts.offload && opts.coalesce;
    this.superIn = this.offload ? new PacketBatch(opts.superBatch ?? SUPER_BATCH, SUPER_SLOT) : null;
    this.superHdrs = this.superIn ? new Uint8Array(this.superIn.capacity * VNET_HDR_LEN) : null;
    const cap = opts.writeCapacity ?? 1024;
    this.coalescer = this.coalescing ? new RxCoalescer(cap, opts.uso === true) : null;
    this.sums = this.coalescing ? new Uint16Array(cap) : null;
    // Segment checksums summed in C, one call per super-packet (offload.ts: finishChecksums).
    this.segmentSummer = this.offload && typeof addon.sumSlots === 'function' ? newSegmentSummer(addon) : undefined;
  }

  private readonly segmentSummer: SegmentSummer | undefined;

  /**
   * Fill slots [0, n) of `batch` with plain IP packets and return n (0 when
   * nothing came within pollMs). With offloads, super-packets are segmented
   * into the batch; ones that do not fit are held for the next call, which
   * then returns at once. A packet too long for its slot comes back with
   * lens[i] = slotSize + 1 for the caller's checks to drop.
   */
  read(batch: PacketBatch, timeoutMs = this.opts.pollMs): number {
    const c = this.readCounts;
    c.superPackets = c.udpSuperPackets = c.segments = c.malformed = c.syscalls = 0;
    const inb = this.superIn;
    if (this.adopted > 0) {
      const k = this.adopted;
      this.adopted = 0;
      c.syscalls = 1;
      if (inb === null) return k;
      this.pendingFrom = 0;
      this.pendingCount = k;
    }
    if (inb === null) {
      const n = this.addon.tunRead(this.fd, batch.buf, batch.slotSize, batch.lens, batch.capacity, timeoutMs);
      if (n > 0) c.syscalls = 1;
      return n;
    }
    if (this.pendingFrom >= this.pendingCount) {
      this.pendingFrom = 0;
      this.pendingCount = this.addon.tunRead(this.fd, inb.buf, SUPER_SLOT, inb.lens, inb.capacity, timeoutMs, this.superHdrs);
      if (this.pendingCount === 0) return 0;
      c.syscalls = 1;
    }
    batch.count = 0;
    this.pendingFrom = expandFromTun(inb, this.superHdrs!, this.pendingFrom, this.pendingCount, batch, this.wordsOf(batch.buf), c, this.segmentSummer);
    return batch.count;
  }

  /**
   * The slots a read lands in, for hop.c to read into: the super-packet
   * slots with offloads, else the caller's batch (the one it then passes
   * to read()).
   */
  readSlots(batch: PacketBatch): HopTunSlots {
    const inb = this.superIn;
    if (inb === null) return { buf: batch.buf, slotSize: batch.slotSize, lens: batch.lens, hdrs: null };
    return { buf: inb.buf, slotSize: SUPER_SLOT, lens: inb.lens, hdrs: this.superHdrs };
  }

  /** hop.c read n packets into readSlots(): the next read() hands them out as if it had read them. */
  adopt(n: number): void {
    this.adopted = n;
  }

  /** Super-packets read but not all handed out yet: the next read() returns at once. */
  get hasPending(): boolean {
    return this.pendingFrom < this.pendingCount;
  }

  /** Wait up to timeoutMs for the device to have a packet, without reading it. */
  waitReadable(timeoutMs = this.opts.pollMs): boolean {
    return this.addon.waitReadable!(this.fd, timeoutMs);
  }

  /**
   * Write slots [0, n) of `batch` (well-formed IPv4 packets of exactly
   * lens[i] bytes with a valid header checksum, as a receive path has
   * checked them) and return how many of them entered the device. With
   * coalescing, TCP segments of one flow go in as one super-packet.
   */
  write(batch: PacketBatch, n: number): number {
    const g = this.coalescer;
    if (g === null) return this.writeUncoalesced(batch, n);
    this.writeCounts.superPackets = this.writeCounts.coalescedSegments = 0;
    if (n === 0) return 0;
    // One packet has nothing to join: written as it is, it skips the sums, the coalescer's copy and
    // its flow table. That is a round trip's case (a ping, a request), where every step runs cold.
    if (n === 1) return this.writeUncoalesced(batch, 1);
    // TCP checksum sums computed in C: 0.10-0.13 us per 1.4 KB segment vs 0.40 in JS (sum16);
    // with it the rx thread's user time fell from 1.07 to 0.60 us per datagram (profile).
    this.addon.sumSlots(batch.buf, batch.slotSize, batch.lens, n, 20, this.sums!);
    const w = g.coalesce(batch, n, this.wordsOf(batch.buf), this.writeCounts, this.sums);
    const { out, hdrs, segs } = g;
    return this.addon.tunWrite(this.fd, out.buf, SUPER_SLOT, out.lens, w, hdrs, segs);
  }

  /** Write slots [0, n) as they are, one packet per write (e.g. ICMP errors we built). */
  writeUncoalesced(batch: PacketBatch, n: number): number {
    if (n === 0) return 0;
    return this.addon.tunWrite(this.fd, batch.buf, batch.slotSize, batch.lens, n, this.offload ? this.zeroHeaders(n) : null);
  }

  private zeroHeaders(n: number): Uint8Array {
    if (this.zeroHdrs === null || this.zeroHdrs.length < n * VNET_HDR_LEN) this.zeroHdrs = new Uint8Array(Math.max(n, 64) * VNET_HDR_LEN);
    return this.zeroHdrs;
  }

  /** wordView of a batch buffer, cached: the loops use the same batch every turn. */
  private wordsOf(buf: Buffer): Uint32Array | null {
    if (buf !== this.lastWordsOf) {
      this.lastWordsOf = buf;
      this.lastWords = wordView(buf);
    }
    return this.lastWords;
  }
}
