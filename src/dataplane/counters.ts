/**
 * Packet counters in a SharedArrayBuffer: every packet the dataplane reads is
 * either forwarded or counted under exactly one drop reason, so the numbers
 * add up and an operator can tell why traffic vanished.
 *
 * Each worker owns one region (a Float64Array, exact to 2^53) and is its only
 * writer, so increments need no atomics; the main thread sums the regions
 * when rendering Prometheus text.
 */
import { sumRegions } from '../metrics/region-counters.js';

/** Counter indexes. Order matters only inside this file and its users. */
export const UdpCounter = {
  /** Packets read from the TUN device (tx direction input; with offloads, after segmentation). */
  tunRead: 0,
  /** Datagrams sent to peers and their payload bytes. */
  sent: 1,
  txBytes: 2,
  /** Datagrams received from the UDP socket (rx direction input) and their bytes. */
  received: 3,
  rxBytes: 4,
  /** Packets written into the TUN device. */
  delivered: 5,
  // tx drops
  txMalformed: 6,
  txNoRoute: 7,
  txTtl: 8,
  txTooBig: 9,
  txLocal: 10,
  txUdpSend: 11,
  // rx drops
  rxMalformed: 12,
  rxTruncated: 13,
  rxUnknownPeer: 14,
  rxSpoofed: 15,
  rxNotLocal: 16,
  rxTunWrite: 17,
  // ICMP errors synthesised back into TUN
  icmpNetUnreachable: 18,
  icmpFragNeeded: 19,
  icmpTimeExceeded: 20,
  /** ICMP errors not sent: forbidden by RFC 1122 rules or over the rate limit. */
  icmpSuppressed: 21,
  /** ICMP errors the TUN write did not take. */
  icmpWriteFailed: 22,
  /** Batches whose I/O call threw (the batch is counted under its drop reason too). */
  ioErrors: 23,
  /** Non-empty batches per direction: packets / batches is the batching achieved. */
  txBatches: 24,
  rxBatches: 25,
  /** Non-IPv4 packets from TUN (e.g. IPv6 neighbour discovery the kernel emits): not an error, but not forwarded. */
  txNotIPv4: 26,
  /**
   * With TUN offloads: TCP super-packets read from TUN, and the segments cut
   * from them (each segment then counts in tunRead like a packet read
   * without offloads, so the drop accounting is per segment).
   */
  tunSuperPackets: 27,
  tunSegments: 28,
  /**
   * With TUN offloads, receive side: super-packets written to TUN after
   * coalescing received TCP segments (gro.ts), and the segments glued into
   * them. `delivered` still counts every received packet that entered TUN.
   */
  rxSuperPackets: 29,
  rxCoalescedSegments: 30,
  /** Times the packet workers were restarted after one died on an fd-level error (main thread). */
  dataplaneRestarts: 31,
  /** With UDP GRO on the socket: super-datagrams received (more than one datagram in one recvmmsg slot) and the datagrams they held. */
  rxGroSuperDatagrams: 32,
  rxGroSegments: 33,
  /**
   * Datagrams the kernel dropped because our socket's receive buffer was
   * full (SO_RXQ_OVFL): overload shed before we saw it. Set, not added, by
   * the rx worker that owns the socket, from the socket's own running count.
   */
  rxSocketOverflow: 34,
  /** UDP super-packets (USO) read from TUN; their datagrams count in tun_offload_segments_total. */
  tunUdpSuperPackets: 35,
  /**
   * Packets read from TUN by an rx worker right after its write, because its
   * tx worker slept (replies sent without waking it); they also count in
   * tunRead and the rest of the tx counters.
   */
  txByRxWorker: 36,
  /** Non-IPv6 packets from an IPv6-only device's TUN (flannel-wg-v6): not forwarded. */
  txNotIPv6: 37,
} as const;

export const COUNTER_COUNT = 38;

/** Most worker pairs (queues) one dataplane runs: the Workers option's cap. */
export const MAX_WORKERS = 8;

/** Regions: one per writer thread (the main thread, then a tx and an rx worker per queue). */
export const REGION_MAIN = 0;
export function workerRegion(role: 'tx' | 'rx', queue: number): number {
  return 1 + 2 * queue + (role === 'rx' ? 1 : 0);
}
export const REGION_TX = workerRegion('tx', 0);
export const REGION_RX = workerRegion('rx', 0);
const REGIONS = 1 + 2 * MAX_WORKERS;

export function createCounterBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(REGIONS * COUNTER_COUNT * 8);
}

/** The region a single thread increments directly: counters[UdpCounter.sent] += n. */
export function counterRegion(sab: SharedArrayBuffer, region: number): Float64Array {
  return new Float64Array(sab, region * COUNTER_COUNT * 8, COUNTER_COUNT);
}

export type CounterName = keyof typeof UdpCounter;

/** Totals over all regions, by name. */
export function readCounters(sab: SharedArrayBuffer): Record<CounterName, number> {
  return sumRegions<CounterName>(sab, UdpCounter, COUNTER_COUNT, REGIONS);
}

const DROPS: [CounterName, string, string][] = [
  ['txNotIPv4', 'tx', 'not_ipv4'],
  ['txNotIPv6', 'tx', 'not_ipv6'],
  ['txMalformed', 'tx', 'malformed'],
  ['txNoRoute', 'tx', 'no_route'],
  ['txTtl', 'tx', 'ttl_exceeded'],
  ['txTooBig', 'tx', 'too_big'],
  ['txLocal', 'tx', 'local_destination'],
  ['txUdpSend', 'tx', 'udp_send'],
  ['rxSocketOverflow', 'rx', 'socket_buffer'],
  ['rxMalformed', 'rx', 'malformed'],
  ['rxTruncated', 'rx', 'truncated'],
  ['rxUnknownPeer', 'rx', 'unknown_peer'],
  ['rxSpoofed', 'rx', 'spoofed'],
  ['rxNotLocal', 'rx', 'not_local'],
  ['rxTunWrite', 'rx', 'tun_write'],
];

/** Sum of every drop counter of one direction. */
export function totalDrops(c: Record<CounterName, number>, direction: 'tx' | 'rx'): number {
  return DROPS.filter(([, d]) => d === direction).reduce((s, [n]) => s + c[n], 0);
}

/** Prometheus text exposition of all counters. */
export function renderCounters(sab: SharedArrayBuffer, prefix = 'flannel_udp'): string {
  const c = readCounters(sab);
  const lines: string[] = [];
  const simple = (name: string, help: string, v: number) => {
    lines.push(`# HELP ${prefix}_${name} ${help}`, `# TYPE ${prefix}_${name} counter`, `${prefix}_${name} ${v}`);
  };
  simple('tun_read_packets_total', 'Packets read from the TUN device.', c.tunRead);
  simple('sent_packets_total', 'Encapsulated datagrams sent to peers.', c.sent);
  simple('sent_bytes_total', 'Payload bytes of datagrams sent to peers.', c.txBytes);
  simple('received_packets_total', 'Datagrams received from the UDP socket.', c.received);
  simple('received_bytes_total', 'Bytes of datagrams received from the UDP socket.', c.rxBytes);
  simple('delivered_packets_total', 'Packets written into the TUN device.', c.delivered);
  lines.push(`# HELP ${prefix}_dropped_packets_total Packets dropped, by direction and reason.`, `# TYPE ${prefix}_dropped_packets_total counter`);
  for (const [name, dir, reason] of DROPS) lines.push(`${prefix}_dropped_packets_total{direction="${dir}",reason="${reason}"} ${c[name]}`);
  lines.push(`# HELP ${prefix}_icmp_sent_total ICMP errors written back into the TUN device, by kind.`, `# TYPE ${prefix}_icmp_sent_total counter`);
  lines.push(`${prefix}_icmp_sent_total{kind="net_unreachable"} ${c.icmpNetUnreachable}`);
  lines.push(`${prefix}_icmp_sent_total{kind="frag_needed"} ${c.icmpFragNeeded}`);
  lines.push(`${prefix}_icmp_sent_total{kind="time_exceeded"} ${c.icmpTimeExceeded}`);
  simple('icmp_suppressed_total', 'ICMP errors not sent (never answering ICMP errors, fragments, broadcasts; rate limit).', c.icmpSuppressed);
  simple('icmp_write_failed_total', 'ICMP errors the TUN device did not accept.', c.icmpWriteFailed);
  simple('tx_batches_total', 'Non-empty batches read from the TUN device.', c.txBatches);
  simple('rx_batches_total', 'Non-empty batches received from the UDP socket.', c.rxBatches);
  simple('io_errors_total', 'Batch I/O calls that failed.', c.ioErrors);
  simple('dataplane_restarts_total', 'Restarts of the packet workers after one died on an fd-level error.', c.dataplaneRestarts);
  simple('tun_offload_super_packets_total', 'TCP super-packets (TSO) read from the TUN device with offloads on (UDP ones: tun_offload_udp_super_packets_total).', c.tunSuperPackets);
  simple('tun_offload_segments_total', 'Packets cut from TCP super-packets; each is also counted in tun_read_packets_total.', c.tunSegments);
  simple('rx_super_packets_total', 'TCP and UDP super-packets (GSO) written to the TUN device after coalescing received packets.', c.rxSuperPackets);
  simple('rx_coalesced_segments_total', 'Received packets coalesced into super-packets; each is also counted in delivered_packets_total.', c.rxCoalescedSegments);
  simple('rx_gro_super_datagrams_total', 'UDP GRO super-datagrams received on the socket (several datagrams in one receive).', c.rxGroSuperDatagrams);
  simple('rx_gro_segments_total', 'Datagrams that arrived inside UDP GRO super-datagrams; each is also counted in received_packets_total.', c.rxGroSegments);
  // Per queue: how the kernel spread the work over the worker pairs (flannel0's queues by flow, the sockets by inner flow).
  const at = (role: 'tx' | 'rx', q: number, idx: number) => counterRegion(sab, workerRegion(role, q))[idx]!;
  lines.push(`# HELP ${prefix}_queue_packets_total Packets each worker pair took in: read from its flannel0 queue (tx) or received on its socket (rx).`, `# TYPE ${prefix}_queue_packets_total counter`);
  for (let q = 0; q < MAX_WORKERS; q++) {
    const tx = at('tx', q, UdpCounter.tunRead) + at('rx', q, UdpCounter.tunRead);
    const rx = at('rx', q, UdpCounter.received);
    if (q > 0 && tx === 0 && rx === 0) continue;
    lines.push(`${prefix}_queue_packets_total{queue="${q}",direction="tx"} ${tx}`, `${prefix}_queue_packets_total{queue="${q}",direction="rx"} ${rx}`);
  }
  simple('tx_by_rx_worker_packets_total', 'Packets the rx worker read from TUN and sent itself right after a write (replies), without waking the tx worker.', c.txByRxWorker);
  simple('tun_offload_udp_super_packets_total', 'UDP super-packets (USO) read from the TUN device; their datagrams count in tun_offload_segments_total.', c.tunUdpSuperPackets);
  return lines.join('\n') + '\n';
}
