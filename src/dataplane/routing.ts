/**
 * The address family a packet worker routes: IPv4 pods (flannel0,
 * flannel-wg) through routes.ts and pipeline.ts, IPv6 pods (flannel-wg-v6)
 * through routes6.ts and pipeline6.ts. The loops in packet-loop.ts call
 * these once per batch and never look at the family themselves.
 */
import { PacketBatch } from '../tun/packet-batch.js';
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

/**
 * Both families on one device (WireGuard's one-device Modes): a batch's
 * IPv6 packets are set aside into a second batch, each part goes through
 * its own family's checks, and the IPv6 survivors follow the IPv4 ones.
 * Packets of the two families belong to different flows, so moving them
 * past each other reorders no flow. A batch of one family (the usual case)
 * goes straight through.
 */
export class DualRouting implements PacketRouting {
  private readonly v4: Ipv4Routing;
  private readonly v6: Ipv6Routing;
  private side: PacketBatch | null = null;

  constructor(routes: SharedArrayBuffer, routes6: SharedArrayBuffer) {
    this.v4 = new Ipv4Routing(routes);
    this.v6 = new Ipv6Routing(routes6);
  }

  refresh(): void {
    this.v4.refresh();
    this.v6.refresh();
  }

  forward(batch: PacketBatch, n: number, icmp: PacketBatch, limiter: IcmpLimiter, counters: Float64Array, pathMtu: number): number {
    const six = this.countIPv6(batch, n);
    if (six === 0) return this.v4.forward(batch, n, icmp, limiter, counters, pathMtu);
    if (six === n) return this.v6.forward(batch, n, icmp, limiter, counters, pathMtu);
    const side = this.split(batch, n);
    const m4 = this.v4.forward(batch, n - six, icmp, limiter, counters, pathMtu);
    return this.join(batch, m4, side, this.v6.forward(side, six, icmp, limiter, counters, pathMtu));
  }

  accept(batch: PacketBatch, n: number, counters: Float64Array): number {
    const six = this.countIPv6(batch, n);
    if (six === 0) return this.v4.accept(batch, n, counters);
    if (six === n) return this.v6.accept(batch, n, counters);
    const side = this.split(batch, n);
    const m4 = this.v4.accept(batch, n - six, counters);
    return this.join(batch, m4, side, this.v6.accept(side, six, counters));
  }

  private countIPv6(batch: PacketBatch, n: number): number {
    let six = 0;
    for (let i = 0; i < n; i++) if (batch.lens[i]! > 0 && batch.lens[i]! <= batch.slotSize && batch.buf[i * batch.slotSize]! >> 4 === 6) six++;
    return six;
  }

  /** Move the IPv6 packets of slots [0, n) to the side batch, compacting the rest; returns the side batch. */
  private split(batch: PacketBatch, n: number): PacketBatch {
    if (!this.side || this.side.capacity < batch.capacity || this.side.slotSize !== batch.slotSize) this.side = new PacketBatch(batch.capacity, batch.slotSize);
    const side = this.side;
    let keep = 0;
    let moved = 0;
    for (let i = 0; i < n; i++) {
      const len = batch.lens[i]!;
      if (len > 0 && len <= batch.slotSize && batch.buf[i * batch.slotSize]! >> 4 === 6) {
        batch.buf.copy(side.buf, moved * side.slotSize, i * batch.slotSize, i * batch.slotSize + len);
        side.lens[moved] = len;
        side.addrs[moved] = batch.addrs[i]!;
        side.ports[moved] = batch.ports[i]!;
        moved++;
      } else {
        if (keep !== i) batch.moveSlot(i, keep);
        keep++;
      }
    }
    side.count = moved;
    return side;
  }

  /** Append the side batch's first m6 slots after the first m4 of batch; returns the total. */
  private join(batch: PacketBatch, m4: number, side: PacketBatch, m6: number): number {
    for (let j = 0; j < m6; j++) {
      const len = side.lens[j]!;
      side.buf.copy(batch.buf, (m4 + j) * batch.slotSize, j * side.slotSize, j * side.slotSize + len);
      batch.lens[m4 + j] = len;
      batch.addrs[m4 + j] = side.addrs[j]!;
      batch.ports[m4 + j] = side.ports[j]!;
    }
    return m4 + m6;
  }
}
