/**
 * The address family a packet worker routes: IPv4 pods (flannel0,
 * flannel-wg) through routes.ts and pipeline.ts, IPv6 pods (flannel-wg-v6)
 * through routes6.ts and pipeline6.ts. The loops in packet-loop.ts call
 * these once per batch and never look at the family themselves.
 */
import type { PacketBatch } from '../../tun/packet-batch.js';
import { RouteTableReader } from './routes.js';
import { RouteTable6Reader } from './routes6.js';
import { acceptFromUdp, forwardFromTun, type IcmpLimiter } from './pipeline.js';
import { acceptFromUdp6, forwardFromTun6 } from './pipeline6.js';

export interface PacketRouting {
  /** Take the newest route table (between batches). */
  refresh(): void;
  /** TUN -> UDP: route and check slots [0, n), compacted; ICMP errors (IPv4) appended to `icmp`. */
  forward(batch: PacketBatch, n: number, icmp: PacketBatch, limiter: IcmpLimiter, counters: Float64Array, pathMtu: number): number;
  /** UDP -> TUN: check slots [0, n) against the sending peer, compacted. */
  accept(batch: PacketBatch, n: number, counters: Float64Array): number;
}

export class Ipv4Routing implements PacketRouting {
  private readonly routes: RouteTableReader;
  constructor(sab: SharedArrayBuffer) {
    this.routes = new RouteTableReader(sab);
  }
  refresh(): void {
    this.routes.refresh();
  }
  forward(batch: PacketBatch, n: number, icmp: PacketBatch, limiter: IcmpLimiter, counters: Float64Array, pathMtu: number): number {
    return forwardFromTun(batch, n, this.routes, icmp, limiter, counters, pathMtu);
  }
  accept(batch: PacketBatch, n: number, counters: Float64Array): number {
    return acceptFromUdp(batch, n, this.routes, counters);
  }
}

export class Ipv6Routing implements PacketRouting {
  private readonly routes: RouteTable6Reader;
  constructor(sab: SharedArrayBuffer) {
    this.routes = new RouteTable6Reader(sab);
  }
  refresh(): void {
    this.routes.refresh();
  }
  forward(batch: PacketBatch, n: number, _icmp: PacketBatch, _limiter: IcmpLimiter, counters: Float64Array, pathMtu: number): number {
    return forwardFromTun6(batch, n, this.routes, counters, pathMtu);
  }
  accept(batch: PacketBatch, n: number, counters: Float64Array): number {
    return acceptFromUdp6(batch, n, this.routes, counters);
  }
}
