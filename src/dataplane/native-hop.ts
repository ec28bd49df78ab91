/**
 * The userspace dataplane's lone-packet hops in C (native/hop.c), as a
 * packet worker sees them. A round trip (a ping, a request and its answer)
 * is four hops of one packet, each after tens of milliseconds of sleep, and
 * cold JS cost each of them 26-70 us between its syscalls
 * (bench/PROFILE.md), more than the hop's own work. hop.c waits, reads, and
 * forwards a packet that came alone after quiet when pipeline.ts would
 * forward it untouched but for its TTL; everything else (streams, batches,
 * super-packets, drops, ICMP errors) it leaves in this worker's own read
 * slots, and the movers take it from there as if they had read it.
 *
 * Flannel's plain encapsulation, or WireGuard's (the encapsulation hands
 * over its shared peer table and replay windows: Encapsulation.nativeHop),
 * over IPv4: IPv6 routes live in another table, IPv6 endpoints are named by
 * the main thread.
 */
import type { HopHandle, HopSpec, HopTunSlots, HopUdpSlots, NativeAddon, WireGuardHopSpec } from '../native/addon.js';
import { UdpCounter } from './counters.js';
import { PLAIN, type Encapsulation } from './encapsulation.js';
import { sharesTunReads } from './movers.js';
import type { WorkerConfig } from './workers.js';

/**
 * How long a worker must have seen no packet for the next lone one to hop
 * in C. Cold code comes from sleeping: after 1 ms of quiet a hop in JS was
 * already slow (bench/PROFILE.md), while in a stream the JS is hot and its
 * turns let packets gather into batches. Taking the lone ACKs of a
 * WireGuard TCP stream in C as well cost that stream a fifth of its
 * throughput (the sender's TCP then sent twice as many, smaller bursts).
 */
export const HOP_QUIET_NS = 1_000_000;

/** hop.c's counter slots, in its enum's order (hopCreate's counterIndexes). */
export const HOP_COUNTER_ORDER = [
  UdpCounter.tunRead,
  UdpCounter.txBatches,
  UdpCounter.sent,
  UdpCounter.txBytes,
  UdpCounter.txUdpSend,
  UdpCounter.rxBatches,
  UdpCounter.received,
  UdpCounter.rxBytes,
  UdpCounter.delivered,
  UdpCounter.rxTunWrite,
  UdpCounter.txByRxWorker,
  UdpCounter.rxSocketOverflow,
  UdpCounter.rxMalformed,
  UdpCounter.rxUnknownPeer,
  UdpCounter.rxSpoofed,
  UdpCounter.rxNotLocal,
];

/**
 * What this worker's hops in C would encapsulate with: { wg: null } for the
 * plain encapsulation, WireGuard's shared state for its transport, or null
 * when they cannot run here (IPv6 routes or peers, the option off).
 */
export function nativeHopEncapsulation(addon: NativeAddon, cfg: WorkerConfig, encap: Encapsulation): { wg: WireGuardHopSpec | null } | null {
  if (!cfg.nativeHop || !cfg.ipv4Pods || cfg.routes6 || cfg.endpoints6 || typeof addon.hopCreate !== 'function') return null;
  if (encap === PLAIN) return { wg: null };
  const wg = encap.nativeHop?.() ?? null;
  return wg ? { wg } : null;
}

export interface HopSlots {
  tx?: HopTunSlots;
  rx?: HopUdpSlots;
  reply?: HopTunSlots | null;
  /** With rx: the region's overflow count before this socket (UdpToTun's overflowBase). */
  overflowBase?: number;
}

export class NativeHop {
  private readonly handle: HopHandle;
  /** Kept: hop.c holds pointers into every array of it for the worker's life. */
  private readonly spec: HopSpec;

  constructor(
    private readonly addon: NativeAddon,
    cfg: WorkerConfig,
    counters: Float64Array,
    slots: HopSlots,
    encapsulation: { wg: WireGuardHopSpec | null },
  ) {
    this.spec = {
      tunFd: cfg.tunFd,
      udpFd: cfg.udpFd,
      pathMtu: cfg.pathMtu,
      maxLen: cfg.slotSize,
      quietNs: HOP_QUIET_NS,
      routes: new Uint32Array(cfg.routes),
      counters,
      counterIndexes: Int32Array.from(HOP_COUNTER_ORDER),
      // The queue's read locks when the rx worker shares its TUN reads.
      locks: sharesTunReads(addon, cfg) ? new Int32Array(cfg.tunReadLocks) : null,
      queue: cfg.queue,
      vnetHdr: cfg.offload,
      tx: slots.tx ?? null,
      rx: slots.rx ?? null,
      reply: slots.reply ?? null,
      overflowBase: slots.overflowBase ?? 0,
      wg: encapsulation.wg,
    };
    this.handle = addon.hopCreate!(this.spec);
  }

  /** See NativeAddon.hopTx: 0 done, n > 0 packets for TypeScript (read lock held), -1 readable but locked. */
  tx(timeoutMs: number): number {
    return this.addon.hopTx!(this.handle, timeoutMs);
  }

  /** See NativeAddon.hopRx: 0 done, n > 0 datagrams for TypeScript, n < 0 answers for TypeScript (read lock held). */
  rx(timeoutMs: number): number {
    return this.addon.hopRx!(this.handle, timeoutMs);
  }
}
