/**
 * The per-batch packet logic of the udp backend, free of I/O so it can be
 * tested with crafted batches. Both directions work in place on the addon's
 * slot buffers: packets that survive are compacted towards slot 0 (a copy
 * happens only after a drop, which is rare), so the surviving prefix is
 * exactly what the next batch I/O call takes. Nothing is allocated per packet.
 *
 * Wire format (flannel's udp backend): the UDP payload is the bare inner
 * IPv4 packet.
 */
import { UdpCounter } from './counters.js';
import type { PacketBatch } from '../tun/packet-batch.js';
import {
  CODE_FRAG_NEEDED,
  CODE_NET_UNREACHABLE,
  CODE_TTL_EXCEEDED,
  ICMP_DEST_UNREACHABLE,
  ICMP_ERROR_MAX,
  ICMP_TIME_EXCEEDED,
  mayReplyWithIcmpError,
  writeIcmpError,
} from '../packet/icmp.js';
import { checkIPv4, decrementTtl, dontFragment, dstAddr, Ipv4Check, isMulticastOrBroadcast, srcAddr } from '../packet/ipv4.js';
import { SourceCheck, type RouteTableReader } from './routes.js';

/** Slot size for ICMP replies (the largest is 96 bytes). */
export const ICMP_SLOT = 128;

/**
 * Token bucket bounding ICMP errors per worker (RFC 1812 4.3.2.8), so a
 * flood towards a dead subnet cannot turn into a flood of replies.
 */
export class IcmpLimiter {
  private tokens: number;
  private last = 0;

  constructor(
    readonly perSecond = 1000,
    readonly burst = 100,
  ) {
    this.tokens = burst;
  }

  /** Called once per batch with a monotonic clock in ms. */
  refill(nowMs: number): void {
    if (this.last !== 0) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.last) * this.perSecond) / 1000);
    this.last = nowMs;
  }

  take(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Queue an ICMP error about packet (buf, off, len) into `icmp`, subject to the rules and the limiter. */
function replyIcmp(
  icmp: PacketBatch,
  limiter: IcmpLimiter,
  counters: Float64Array,
  buf: Buffer,
  off: number,
  len: number,
  type: number,
  code: number,
  mtu: number,
  from: number,
  counter: number,
): void {
  if (icmp.count >= icmp.capacity || !mayReplyWithIcmpError(buf, off, len) || !limiter.take()) {
    counters[UdpCounter.icmpSuppressed]! += 1;
    return;
  }
  const slot = icmp.count;
  icmp.lens[slot] = writeIcmpError(icmp.buf, slot * icmp.slotSize, buf, off, len, type, code, mtu, from);
  icmp.count = slot + 1;
  counters[counter]! += 1;
}

/**
 * TUN -> UDP. `batch` holds `n` packets read from TUN. Routes each one to
 * its peer, fills addrs/ports, compacts survivors and returns how many to
 * send. ICMP errors for dropped packets are appended to `icmp` (whose count
 * the caller resets per batch). `pathMtu` is the largest inner packet the
 * underlay carries without fragmenting the outer datagram.
 */
export function forwardFromTun(
  batch: PacketBatch,
  n: number,
  routes: RouteTableReader,
  icmp: PacketBatch,
  limiter: IcmpLimiter,
  counters: Float64Array,
  pathMtu: number,
): number {
  const { buf, lens, addrs, ports, slotSize } = batch;
  const icmpFrom = routes.icmpSource;
  let out = 0;
  counters[UdpCounter.tunRead]! += n;
  for (let i = 0; i < n; i++) {
    const off = i * slotSize;
    let len = lens[i]!;
    const check = len > slotSize ? Ipv4Check.TooShort : checkIPv4(buf, off, len, false, false);
    if (check !== Ipv4Check.Ok) {
      counters[check === Ipv4Check.NotIPv4 ? UdpCounter.txNotIPv4 : UdpCounter.txMalformed]! += 1;
      continue;
    }
    // The kernel never pads, but trust the header over the read length.
    len = (buf[off + 2]! << 8) | buf[off + 3]!;
    const dst = dstAddr(buf, off);
    if (routes.isOwn(dst)) {
      // Our own subnet is routed to the local bridge; reaching flannel0 means a local misroute.
      counters[UdpCounter.txLocal]! += 1;
      continue;
    }
    const r = routes.lookup(dst);
    if (r < 0) {
      counters[UdpCounter.txNoRoute]! += 1;
      replyIcmp(icmp, limiter, counters, buf, off, len, ICMP_DEST_UNREACHABLE, CODE_NET_UNREACHABLE, 0, icmpFrom, UdpCounter.icmpNetUnreachable);
      continue;
    }
    if (buf[off + 8]! <= 1) {
      counters[UdpCounter.txTtl]! += 1;
      replyIcmp(icmp, limiter, counters, buf, off, len, ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0, icmpFrom, UdpCounter.icmpTimeExceeded);
      continue;
    }
    if (len > pathMtu && dontFragment(buf, off)) {
      counters[UdpCounter.txTooBig]! += 1;
      replyIcmp(icmp, limiter, counters, buf, off, len, ICMP_DEST_UNREACHABLE, CODE_FRAG_NEEDED, pathMtu, icmpFrom, UdpCounter.icmpFragNeeded);
      continue;
    }
    // Without DF an oversized packet is still sent: the kernel fragments the outer datagram.
    decrementTtl(buf, off);
    if (out !== i) buf.copyWithin(out * slotSize, off, off + len);
    lens[out] = len;
    addrs[out] = routes.peers[r]!;
    ports[out] = routes.ports[r]!;
    out++;
  }
  return out;
}

/** Account for the first `sent` of `count` queued datagrams having left; the rest are dropped. */
export function accountSent(batch: PacketBatch, count: number, sent: number, counters: Float64Array): void {
  let bytes = 0;
  for (let i = 0; i < sent; i++) bytes += batch.lens[i]!;
  counters[UdpCounter.sent]! += sent;
  counters[UdpCounter.txBytes]! += bytes;
  counters[UdpCounter.txUdpSend]! += count - sent;
}

/**
 * UDP -> TUN. `batch` holds `n` datagrams (addrs/ports = their source).
 * Keeps only well-formed IPv4 packets whose inner source lies in the lease
 * subnet of the peer that sent them and whose destination is in our own
 * subnet; compacts them and returns how many to write into TUN.
 */
export function acceptFromUdp(batch: PacketBatch, n: number, routes: RouteTableReader, counters: Float64Array): number {
  const { buf, lens, addrs, slotSize } = batch;
  let out = 0;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const off = i * slotSize;
    const len = lens[i]!;
    if (len > slotSize) {
      // The addon reports slotSize + 1 for a datagram cut short by the slot.
      bytes += slotSize;
      counters[UdpCounter.rxTruncated]! += 1;
      continue;
    }
    bytes += len;
    if (checkIPv4(buf, off, len, true, true) !== Ipv4Check.Ok) {
      counters[UdpCounter.rxMalformed]! += 1;
      continue;
    }
    const check = routes.checkSource(addrs[i]!, srcAddr(buf, off));
    if (check !== SourceCheck.Allowed) {
      counters[check === SourceCheck.UnknownPeer ? UdpCounter.rxUnknownPeer : UdpCounter.rxSpoofed]! += 1;
      continue;
    }
    const dst = dstAddr(buf, off);
    if (!routes.isOwn(dst) || isMulticastOrBroadcast(dst)) {
      counters[UdpCounter.rxNotLocal]! += 1;
      continue;
    }
    if (out !== i) buf.copyWithin(out * slotSize, off, off + len);
    lens[out] = len;
    out++;
  }
  counters[UdpCounter.received]! += n;
  counters[UdpCounter.rxBytes]! += bytes;
  return out;
}

/** Account for the first `written` of `count` packets having entered TUN. */
export function accountDelivered(count: number, written: number, counters: Float64Array): void {
  counters[UdpCounter.delivered]! += written;
  counters[UdpCounter.rxTunWrite]! += count - written;
}

export { ICMP_ERROR_MAX };
