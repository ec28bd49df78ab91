/**
 * What a udp packet worker does per batch, apart from its loop: TunToUdp
 * moves one TUN read's worth to the socket, UdpToTun one receive's worth
 * to TUN (and the replies the kernel queued meanwhile back out), and
 * QueueReadLock orders the two readers of a queue's TUN fd. The loops in
 * packet-loop.ts call them, and prime.ts runs the same classes over
 * loopback sockets first so that a worker starts with compiled code for
 * every kind of packet.
 */
import { performance } from 'node:perf_hooks';
import type { HopTunSlots, NativeAddon } from '../native/addon.js';
import type { HopSlots, NativeHop } from './native-hop.js';
import { TunDevice } from '../tun/device.js';
import { MAX_SEGMENTS } from '../tun/offload.js';
import { PacketBatch } from '../tun/packet-batch.js';
import { UdpSocket } from '../conn/udp-socket.js';
import { UdpCounter } from './counters.js';
import { accountDelivered, accountSent, IcmpLimiter, ICMP_SLOT } from './pipeline.js';
import { DualRouting, Ipv4Routing, Ipv6Routing, type PacketRouting } from './routing.js';
import type { Encapsulation } from './encapsulation.js';
import type { WorkerConfig } from './workers.js';

/** Segment slots per send with offloads: room for the largest super-packet (MAX_SEGMENTS). */
const SEGMENT_BATCH = MAX_SEGMENTS;
/**
 * Datagrams per recvmmsg when coalescing: more per batch means longer
 * super-packets. Profile (one TCP stream): 64 -> 60 datagrams/batch, 27
 * segments per super-packet, 3.45 Gbit/s; 256 -> 183/batch, 39 per
 * super-packet, 4.08 Gbit/s; 1024 was no better. Costs 256 x 64 KB of
 * (mostly untouched) output slots.
 */
const RX_COALESCE_BATCH = 256;
/** Super-packets per TUN read with offloads (at most the configured batch size). */
const SUPER_BATCH = 16;
/** Super-packets the rx worker takes per read when it sends what the kernel answered (replies are few and small). */
const REPLY_SUPER_BATCH = 4;
/** Received batches up to this many datagrams get their replies sent by the rx worker itself. */
const REPLY_FAST_MAX_BATCH = 8;

/**
 * One TUN read's worth of the tx direction: read, route and check, seal,
 * send, and ICMP errors for what cannot be sent written back into TUN.
 * The tx worker runs one; the rx worker runs another on the same queue to
 * send at once what the kernel put into TUN while it wrote (see UdpToTun).
 */
export class TunToUdp {
  private readonly batch: PacketBatch;
  private readonly icmp: PacketBatch;
  private readonly limiter = new IcmpLimiter();

  constructor(
    readonly tun: TunDevice,
    private readonly udp: UdpSocket,
    private readonly encap: Encapsulation,
    private readonly routes: PacketRouting,
    private readonly counters: Float64Array,
    private readonly cfg: WorkerConfig,
  ) {
    this.batch = new PacketBatch(tun.offload ? SEGMENT_BATCH : cfg.batchSize, cfg.slotSize);
    this.icmp = new PacketBatch(cfg.batchSize, ICMP_SLOT);
  }

  /** Where a read of this mover lands (hop.c reads there and leaves the packets to adopt). */
  readSlots(): HopTunSlots {
    return this.tun.readSlots(this.batch);
  }

  /** Move one batch, waiting up to timeoutMs for the first packet; returns the packets read (0: none came). */
  move(timeoutMs: number): number {
    const { tun, batch, icmp, counters } = this;
    const n = tun.read(batch, timeoutMs);
    const rc = tun.readCounts;
    // Packets the device could not expand count as read and dropped as malformed, like any bad packet.
    counters[UdpCounter.txBatches] += rc.syscalls;
    counters[UdpCounter.tunSuperPackets] += rc.superPackets;
    counters[UdpCounter.tunSegments] += rc.segments;
    counters[UdpCounter.tunUdpSuperPackets] += rc.udpSuperPackets;
    counters[UdpCounter.tunRead] += rc.malformed;
    counters[UdpCounter.txMalformed] += rc.malformed;
    if (n === 0) return rc.malformed;
    this.routes.refresh();
    this.limiter.refill(performance.now());
    icmp.count = 0;
    const m = this.encap.seal(batch, this.routes.forward(batch, n, icmp, this.limiter, counters, this.cfg.pathMtu));
    if (m > 0) accountSent(batch, m, this.udp.send(batch, m, tun.offload, this.encap.bareInner), counters);
    if (icmp.count > 0) counters[UdpCounter.icmpWriteFailed] += icmp.count - tun.writeUncoalesced(icmp, icmp.count);
    return n + rc.malformed;
  }

  /**
   * Move up to `max` batches without waiting (fewer when the queue runs
   * empty), then on while segments of a super-packet are still held: the
   * caller releases the read lock next, and another reader must not
   * overtake them. Returns the packets read.
   */
  drain(max: number): number {
    let moved = 0;
    for (let k = 0; k < max || this.tun.hasPending; k++) {
      const n = this.move(0);
      moved += n;
      if (n === 0 && !this.tun.hasPending) break;
    }
    return moved;
  }
}

/**
 * Who reads a queue's TUN fd: the tx worker, and the rx worker right after
 * its writes. A word per queue in shared memory; whoever holds it reads,
 * sends and releases, so packets of one flow leave in the order they were
 * read whichever thread read them.
 */
export class QueueReadLock {
  private readonly words: Int32Array;
  private readonly idleAt: number;
  constructor(
    sab: SharedArrayBuffer,
    private readonly q: number,
  ) {
    this.words = new Int32Array(sab);
    this.idleAt = this.words.length / 2 + q;
  }
  /** The tx worker says it is (about to be) asleep waiting for the device, or awake. */
  setTxIdle(idle: boolean): void {
    Atomics.store(this.words, this.idleAt, idle ? 1 : 0);
  }
  /** Whether the tx worker would have to be woken to read the queue. */
  get txIdle(): boolean {
    return Atomics.load(this.words, this.idleAt) === 1;
  }
  tryAcquire(): boolean {
    return Atomics.compareExchange(this.words, this.q, 0, 1) === 0;
  }
  acquire(): void {
    // The other holder keeps it for one batch (microseconds): wait in short steps.
    while (!this.tryAcquire()) Atomics.wait(this.words, this.q, 1, 1);
  }
  release(): void {
    Atomics.store(this.words, this.q, 0);
    Atomics.notify(this.words, this.q, 1);
  }
}

/**
 * Whether the rx worker also sends what the kernel answers into TUN. With
 * WireGuard both workers then seal: send counters are taken atomically and
 * each sender counts its bytes in its own word (peer-table.ts).
 */
export function sharesTunReads(addon: NativeAddon, cfg: WorkerConfig): boolean {
  return cfg.replyFastPath && typeof addon.waitReadable === 'function';
}

/**
 * One receive's worth of the rx direction: receive, open, check, write into
 * TUN (coalesced into super-packets when the device does that), and, while
 * the tx worker sleeps, send at once what the kernel put into TUN during
 * the write (see `reply`).
 */
export class UdpToTun {
  private readonly batch: PacketBatch;
  private readonly reply: { lock: QueueReadLock; fwd: TunToUdp } | null;
  /** The socket's overflow count starts at 0; the region may hold counts of sockets before a restart. */
  private readonly overflowBase: number;

  constructor(
    addon: NativeAddon,
    private readonly tun: TunDevice,
    private readonly udp: UdpSocket,
    private readonly encap: Encapsulation,
    private readonly routes: PacketRouting,
    private readonly counters: Float64Array,
    cfg: WorkerConfig,
  ) {
    // A TUN write runs the inner packet through the kernel at once, and what the kernel answers on the
    // spot (an echo reply, a TCP ACK) is queued on flannel0 before the write returns. Reading and sending
    // it here saves waking the tx worker: one thread hand-off less per round trip (bench/PROFILE.md).
    // Its tx-side counts go to this thread's region (regions are summed).
    this.reply = sharesTunReads(addon, cfg)
      ? { lock: new QueueReadLock(cfg.tunReadLocks, cfg.queue), fwd: new TunToUdp(readSide(addon, cfg, REPLY_SUPER_BATCH), udp, encap, routes, counters, cfg) }
      : null;
    this.batch = new PacketBatch(rxBatchSize(cfg), cfg.slotSize);
    this.overflowBase = counters[UdpCounter.rxSocketOverflow]!;
  }

  /** Where this mover's receives, and its reads of answers, land (for hop.c). */
  hopSlots(): HopSlots {
    return { rx: this.udp.receiveSlots(this.batch), reply: this.reply ? this.reply.fwd.readSlots() : null, overflowBase: this.overflowBase };
  }

  /** Datagrams received and not yet moved (the socket holds the rest of a receive). */
  get holdsReceived(): boolean {
    return this.udp.hasPending;
  }

  /** hop.c received n datagrams into hopSlots().rx: the next move() takes them. */
  adoptReceived(n: number): void {
    this.udp.adopt(n);
  }

  /** hop.c read n answers into hopSlots().reply and holds the read lock: send them and release it. */
  sendAdoptedReplies(n: number): void {
    this.reply!.fwd.tun.adopt(n);
    this.sendReplies();
  }

  /** With the queue's read lock held: send what the kernel answered into TUN, and release it. */
  private sendReplies(): void {
    const reply = this.reply!;
    try {
      this.counters[UdpCounter.txByRxWorker] += reply.fwd.drain(1);
    } finally {
      reply.lock.release();
    }
  }

  /** Move one batch, waiting up to timeoutMs (the socket's poll time) for the first datagram; returns the datagrams received. */
  move(timeoutMs?: number): number {
    const { tun, udp, batch, counters, routes, reply } = this;
    const n = udp.recv(batch, timeoutMs);
    if (n === 0) return 0;
    const rc = udp.recvCounts;
    counters[UdpCounter.rxBatches] += rc.syscalls;
    counters[UdpCounter.rxGroSuperDatagrams] += rc.superDatagrams;
    counters[UdpCounter.rxGroSegments] += rc.segments;
    counters[UdpCounter.rxSocketOverflow] = this.overflowBase + udp.drops[0]!;
    routes.refresh();
    const m = routes.accept(batch, this.encap.open(batch, n), counters);
    if (m === 0) return n;
    accountDelivered(m, tun.write(batch, m), counters);
    const wc = tun.writeCounts;
    counters[UdpCounter.rxSuperPackets] += wc.superPackets;
    counters[UdpCounter.rxCoalescedSegments] += wc.coalescedSegments;
    // Only while the tx worker sleeps: that is when a round trip would wait on waking it. A busy tx
    // worker reads the queue anyway, and taking its bulk work here slowed one TCP stream (5 runs each:
    // 2.55-3.29 Gbit/s with replies sent here after every small batch, 2.92-3.45 without).
    if (reply && n <= REPLY_FAST_MAX_BATCH && reply.lock.txIdle && reply.lock.tryAcquire()) this.sendReplies();
    return n;
  }
}

/**
 * The rx worker's loop turn with hop.c: it receives, and delivers a lone
 * datagram (and sends what the kernel answered) itself; what it leaves in
 * the slots, UdpToTun moves as if it had received or read it.
 */
export function moveWithHop(rx: UdpToTun, hop: NativeHop, timeoutMs: number): number {
  // Datagrams still held from the last receive are cut first: a receive now would land on them.
  if (rx.holdsReceived) return rx.move(0);
  const r = hop.rx(timeoutMs);
  if (r > 0) {
    rx.adoptReceived(r);
    return rx.move(0);
  }
  if (r < 0) rx.sendAdoptedReplies(-r);
  return 0;
}

/** A TUN device for reading on this worker's queue (the rx worker's second view of the fd). */
function readSide(addon: NativeAddon, cfg: WorkerConfig, superBatch: number): TunDevice {
  return new TunDevice(addon, cfg.tunFd, { offload: cfg.offload, coalesce: false, uso: cfg.uso, pollMs: cfg.pollMs, superBatch: Math.min(cfg.batchSize, superBatch) });
}

export function routing(cfg: WorkerConfig): PacketRouting {
  if (!cfg.routes6) return new Ipv4Routing(cfg.routes);
  return cfg.ipv4Pods ? new DualRouting(cfg.routes, cfg.routes6) : new Ipv6Routing(cfg.routes6);
}

export function rxBatchSize(cfg: WorkerConfig): number {
  return cfg.offload && cfg.rxCoalesce ? Math.min(Math.max(cfg.batchSize, RX_COALESCE_BATCH), SEGMENT_BATCH) : cfg.batchSize;
}

/** The TUN queue and UDP socket of a worker's queue, wrapped as its role uses them. */
export function queueDevices(addon: NativeAddon, cfg: WorkerConfig): { tun: TunDevice; udp: UdpSocket } {
  const tun = new TunDevice(addon, cfg.tunFd, {
    offload: cfg.offload,
    coalesce: cfg.role === 'rx' && cfg.rxCoalesce,
    uso: cfg.uso,
    pollMs: cfg.pollMs,
    superBatch: Math.min(cfg.batchSize, SUPER_BATCH),
    writeCapacity: rxBatchSize(cfg),
  });
  const udp = new UdpSocket(addon, cfg.udpFd, cfg.pollMs, { gro: cfg.role === 'rx' && cfg.udpGro, ...(cfg.endpoints6 ? { endpoints6: new Uint8Array(cfg.endpoints6) } : {}) });
  return { tun, udp };
}
