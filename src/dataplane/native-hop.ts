/**
 * The udp backend's lone-packet hops in C (native/hop.c), as a packet
 * worker sees them. A round trip (a ping, a request and its answer) is four
 * hops of one packet, each after tens of milliseconds of sleep, and cold JS
 * cost each of them 26-70 us between its syscalls (bench/PROFILE.md), more
 * than the hop's own work. hop.c waits, reads, and forwards a lone packet
 * that pipeline.ts would forward untouched but for its TTL; everything else
 * (batches, super-packets, drops, ICMP errors) it leaves in this worker's
 * own read slots, and the movers take it from there as if they had read it.
 *
 * Only flannel's plain encapsulation over IPv4: WireGuard seals in
 * TypeScript (and needs its peer table), IPv6 routes live in another table.
 */
import type { HopHandle, HopSpec, HopTunSlots, HopUdpSlots, NativeAddon } from '../native/addon.js';
import { UdpCounter } from './counters.js';
import { PLAIN, type Encapsulation } from './encapsulation.js';
import type { WorkerConfig } from './workers.js';

/** hop.c's counter slots, in its enum's order. */
const COUNTER_ORDER = [
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
];

/** Whether this worker's hops can run in C: the plain encapsulation, IPv4 routes and peers, the option on. */
export function nativeHopFits(addon: NativeAddon, cfg: WorkerConfig, encap: Encapsulation): boolean {
  return cfg.nativeHop && encap === PLAIN && cfg.ipv4Pods && !cfg.routes6 && !cfg.endpoints6 && typeof addon.hopCreate === 'function';
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
    /** The queue's read locks when its reads are shared (sharesTunReads), else null. */
    locks: SharedArrayBuffer | null,
    slots: HopSlots,
  ) {
    this.spec = {
      tunFd: cfg.tunFd,
      udpFd: cfg.udpFd,
      pathMtu: cfg.pathMtu,
      maxLen: cfg.slotSize,
      routes: new Uint32Array(cfg.routes),
      counters,
      counterIndexes: Int32Array.from(COUNTER_ORDER),
      locks: locks ? new Int32Array(locks) : null,
      queue: cfg.queue,
      vnetHdr: cfg.offload,
      tx: slots.tx ?? null,
      rx: slots.rx ?? null,
      reply: slots.reply ?? null,
      overflowBase: slots.overflowBase ?? 0,
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
