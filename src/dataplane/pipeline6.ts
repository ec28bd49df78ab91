/**
 * The per-batch packet logic for IPv6 pods (flannel-wg-v6), the IPv6 twin
 * of pipeline.ts: same in-place compaction, same counters, no allocation.
 * A packet's destination picks the peer's endpoint id (routes6.ts); what
 * arrives must come from inside the subnets of the peer whose key opened it
 * and go to our own subnet.
 *
 * No ICMPv6 errors are made up here: the device's MTU keeps packets within
 * the path MTU (the kernel sends Packet Too Big itself), and what cannot be
 * routed is counted and dropped.
 */
import { UdpCounter } from './counters.js';
import type { PacketBatch } from '../tun/packet-batch.js';
import { checkIPv6, decrementHopLimit, hopLimit, ipv6Length, Ipv6Check, IPV6_DST, isMulticast6 } from '../packet/ipv6.js';
import { SourceCheck } from './routes.js';
import type { RouteTable6Reader } from './routes6.js';

/** TUN -> UDP for IPv6 packets: route, check, compact; returns how many to send. */
export function forwardFromTun6(batch: PacketBatch, n: number, routes: RouteTable6Reader, counters: Float64Array, pathMtu: number): number {
  const { buf, lens, addrs, ports, slotSize } = batch;
  let out = 0;
  counters[UdpCounter.tunRead]! += n;
  for (let i = 0; i < n; i++) {
    const off = i * slotSize;
    const read = lens[i]!;
    const check = read > slotSize ? Ipv6Check.TooShort : checkIPv6(buf, off, read);
    if (check !== Ipv6Check.Ok) {
      counters[check === Ipv6Check.NotIPv6 ? UdpCounter.txNotIPv6 : UdpCounter.txMalformed]! += 1;
      continue;
    }
    const len = ipv6Length(buf, off);
    if (routes.isOwn(buf, off + IPV6_DST)) {
      counters[UdpCounter.txLocal]! += 1;
      continue;
    }
    const r = routes.lookup(buf, off);
    if (r < 0) {
      counters[UdpCounter.txNoRoute]! += 1;
      continue;
    }
    if (hopLimit(buf, off) <= 1) {
      counters[UdpCounter.txTtl]! += 1;
      continue;
    }
    if (len > pathMtu) {
      counters[UdpCounter.txTooBig]! += 1;
      continue;
    }
    decrementHopLimit(buf, off);
    if (out !== i) buf.copyWithin(out * slotSize, off, off + len);
    lens[out] = len;
    addrs[out] = routes.peers[r]!;
    ports[out] = routes.ports[r]!;
    out++;
  }
  return out;
}

/** UDP -> TUN for IPv6 packets (addrs = the endpoint id of the peer that sent each); returns how many to write. */
export function acceptFromUdp6(batch: PacketBatch, n: number, routes: RouteTable6Reader, counters: Float64Array): number {
  const { buf, lens, addrs, slotSize } = batch;
  let out = 0;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const off = i * slotSize;
    const read = lens[i]!;
    if (read > slotSize) {
      bytes += slotSize;
      counters[UdpCounter.rxTruncated]! += 1;
      continue;
    }
    bytes += read;
    if (checkIPv6(buf, off, read) !== Ipv6Check.Ok) {
      counters[UdpCounter.rxMalformed]! += 1;
      continue;
    }
    const check = routes.checkSource(addrs[i]!, buf, off);
    if (check !== SourceCheck.Allowed) {
      counters[check === SourceCheck.UnknownPeer ? UdpCounter.rxUnknownPeer : UdpCounter.rxSpoofed]! += 1;
      continue;
    }
    if (!routes.isOwn(buf, off + IPV6_DST) || isMulticast6(buf, off + IPV6_DST)) {
      counters[UdpCounter.rxNotLocal]! += 1;
      continue;
    }
    const len = ipv6Length(buf, off);
    if (out !== i) buf.copyWithin(out * slotSize, off, off + len);
    lens[out] = len;
    out++;
  }
  counters[UdpCounter.received]! += n;
  counters[UdpCounter.rxBytes]! += bytes;
  return out;
}
