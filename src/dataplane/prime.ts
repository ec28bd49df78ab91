/**
 * Workers start hot. V8 compiles a function for the kinds of input it has
 * seen: a worker that has carried only bulk TCP has machine code for TCP
 * segments, and the first ping after it takes a branch that code never
 * saw, is thrown back to the interpreter, and stays there, because a few
 * packets a second never make it hot again. Measured with `bench:rtt`
 * settings (one TCP stream, 1 s quiet, pings 50 ms apart; syscall trace
 * of both daemons, time from a read returning to the send entering):
 *
 *   warmed by 2 s of TCP only:           RTT p50 0.68-0.82 ms, 41-106 us of JS per hop
 *   warmed by a ping flood, then TCP:    RTT p50 0.52-0.58 ms, 26-36 us of JS per hop
 *
 * So before touching its fds, each worker runs its own classes (the same
 * TunToUdp and UdpToTun, hence the same type feedback) with every kind of
 * packet the loops branch on: echo requests and replies, TCP super-packets
 * and GRO runs, lone ACKs, UDP with and without segmentation, packets with
 * no route, TTL 1, too big with DF, spoofed and malformed datagrams. It
 * uses the real addon on sockets of its own on 127.0.0.1 standing in for
 * the TUN queue and the peer (a synthetic addon would leave the code
 * compiled for an object the real loop never passes, and the first real
 * packet would throw it away again), and a route table of its own, so
 * nothing reaches flannel0, a peer or a counter. Without a loopback
 * (`lo` down) the packets never arrive and nothing is primed. It costs
 * each worker 0.25-0.4 s of CPU at start (measured on this project's
 * 2-core VM).
 */
import type { NativeAddon } from '../native/addon.js';
import { enableUdpGro } from '../conn/udp-socket.js';
import { checksum, onesSum, PROTO_ICMP, writeU16, writeU32 } from '../packet/ipv4.js';
import { fold, PROTO_TCP, PROTO_UDP, pseudoSum, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_HDR_LEN } from '../tun/offload.js';
import { PacketBatch } from '../tun/packet-batch.js';
import { counterRegion, createCounterBuffer, workerRegion } from './counters.js';
import { PLAIN } from './encapsulation.js';
import { queueDevices, routing, TunToUdp, UdpToTun } from './movers.js';
import { createRouteTableBuffer, RouteTableWriter } from './routes.js';
import type { WorkerConfig } from './workers.js';

/** Rounds of the whole corpus: enough for V8 to optimise every mover function (checked with --trace-opt). */
const ROUNDS = 600;

const ip4 = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
/**
 * A synthetic overlay: our pods 10.255.1.0/24; a peer (the injector below)
 * with 10.255.2.0/24 and 172.31.2.0/24 (addresses above 2^31 are doubles,
 * not small integers, to V8, and real ones come in both kinds); a peer
 * 192.0.2.254 with 172.31.9.0/24 that a socket on 127.0.0.1 cannot reach
 * (the send fails, as sends sometimes do).
 */
const OWN = ip4(10, 255, 1, 0);
const REMOTE = ip4(10, 255, 2, 0);
const REMOTE_HIGH = ip4(172, 31, 2, 0);
const UNREACHABLE = ip4(172, 31, 9, 0);
const LOOPBACK = ip4(127, 0, 0, 1);
const MSS = 1400;

interface TunPacket {
  hdr: Uint8Array;
  bytes: Uint8Array;
}
interface Datagram {
  bytes: Uint8Array;
  /** Sent in one UDP_SEGMENT run of this segment size with the others of its group (0: a single datagram), as a peer's sender does. */
  gsoSize: number;
}

/** An IPv4 packet from src to dst carrying `l4` (whose checksum, if any, the caller fills in). */
function ipv4(src: number, dst: number, proto: number, l4: Uint8Array, opts: { ttl?: number; id?: number; df?: boolean } = {}): Uint8Array {
  const b = Buffer.alloc(20 + l4.length);
  b[0] = 0x45;
  writeU16(b, 2, b.length);
  writeU16(b, 4, opts.id ?? 1);
  writeU16(b, 6, opts.df === false ? 0 : 0x4000);
  b[8] = opts.ttl ?? 64;
  b[9] = proto;
  writeU32(b, 12, src);
  writeU32(b, 16, dst);
  writeU16(b, 10, checksum(b, 0, 20));
  b.set(l4, 20);
  return b;
}

/** Fill the transport checksum at `field` (offset into the L4 header) in full. */
function fullChecksum(b: Uint8Array, proto: number, field: number): Uint8Array {
  const l4Len = b.length - 20;
  writeU16(b, 20 + field, 0);
  writeU16(b, 20 + field, ~onesSum(b, 20, l4Len, pseudoSum(b, 0, proto) + l4Len) & 0xffff);
  return b;
}

/** Leave the transport checksum partial (the pseudo-header sum), as the kernel hands it over with NEEDS_CSUM. */
function partialChecksum(b: Uint8Array, proto: number, field: number): Uint8Array {
  writeU16(b, 20 + field, fold(pseudoSum(b, 0, proto) + b.length - 20));
  return b;
}

function echo(type: number, payload: number, seq: number): Uint8Array {
  const m = Buffer.alloc(8 + payload);
  m[0] = type;
  writeU16(m, 6, seq);
  for (let i = 8; i < m.length; i++) m[i] = i & 0xff;
  writeU16(m, 2, checksum(m, 0, m.length));
  return m;
}

/** A TCP segment as Linux sends them: with the timestamp option (a 32-byte header). */
function tcp(seq: number, payload: number, flags: number): Uint8Array {
  const t = Buffer.alloc(32 + payload);
  writeU16(t, 0, 40000);
  writeU16(t, 2, 5201);
  writeU32(t, 4, seq >>> 0);
  writeU32(t, 8, 0x80000001);
  t[12] = 8 << 4;
  t[13] = flags;
  writeU16(t, 14, 502);
  t[20] = 1; // NOP, NOP, timestamps (kind 8, length 10)
  t[21] = 1;
  t[22] = 8;
  t[23] = 10;
  writeU32(t, 24, 0xf0000000); // one timestamp for a whole run, as GSO sends it (so GRO may glue the run again)
  writeU32(t, 28, 0x90000000);
  for (let i = 32; i < t.length; i++) t[i] = (seq + i) & 0xff;
  return t;
}

function udp(payload: number): Uint8Array {
  const u = Buffer.alloc(8 + payload);
  writeU16(u, 0, 40001);
  writeU16(u, 2, 5201);
  writeU16(u, 4, u.length);
  return u;
}

function hdr(flags: number, gsoType: number, gsoSize: number, csumOffset: number, hdrLen = 0): Uint8Array {
  const h = Buffer.alloc(VNET_HDR_LEN);
  h[0] = flags;
  h[1] = gsoType;
  h[2] = hdrLen & 0xff;
  h[3] = hdrLen >>> 8;
  h[4] = gsoSize & 0xff;
  h[5] = gsoSize >>> 8;
  if (flags & VNET_F_NEEDS_CSUM) {
    h[6] = 20;
    h[8] = csumOffset;
  }
  return h;
}

const ACK = 0x10;
const PSH = 0x08;
const PLAIN_HDR = hdr(0, VNET_GSO_NONE, 0, 0);

/** What the kernel hands a tx worker from TUN: every kind its code branches on. */
function tunCorpus(round: number, uso: boolean, pathMtu: number): TunPacket[] {
  const src = OWN + 10;
  const dst = [REMOTE, REMOTE_HIGH, UNREACHABLE][round % 3]! + 20;
  const seq = (round * 7919 * MSS + 0xfff00000) >>> 0; // wraps past 2^32 within the run, as real sequence numbers do
  const out: TunPacket[] = [
    { hdr: PLAIN_HDR, bytes: ipv4(src, dst, PROTO_ICMP, echo(8, 56, round)) },
    { hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 16), bytes: partialChecksum(ipv4(src, dst, PROTO_TCP, tcp(seq, 0, ACK)), PROTO_TCP, 16) },
    { hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 6), bytes: partialChecksum(ipv4(src, dst, PROTO_UDP, udp(200)), PROTO_UDP, 6) },
    { hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, MSS, 16, 52), bytes: partialChecksum(ipv4(src, dst, PROTO_TCP, tcp(seq, 8 * MSS - (round % 2) * 300, ACK | PSH), { id: round }), PROTO_TCP, 16) },
    { hdr: PLAIN_HDR, bytes: ipv4(src, ip4(10, 254, 0, 1), PROTO_ICMP, echo(8, 56, round)) }, // no route: ICMP net unreachable
    { hdr: PLAIN_HDR, bytes: ipv4(src, dst, PROTO_ICMP, echo(8, 56, round), { ttl: 1 }) }, // TTL exceeded
    { hdr: PLAIN_HDR, bytes: ipv4(src, dst, PROTO_ICMP, echo(8, pathMtu - 20, round)) }, // too big with DF
    { hdr: PLAIN_HDR, bytes: new Uint8Array(40) }, // not IPv4
  ];
  if (uso) out.push({ hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_UDP_L4, 1200, 6, 28), bytes: partialChecksum(ipv4(src, dst, PROTO_UDP, udp(4 * 1200 - (round % 2) * 100)), PROTO_UDP, 6) });
  return out;
}

/** What the kernel may queue on TUN while a rx worker writes: an echo reply, a TCP ACK (checksum left to us), or nothing. */
function replies(round: number): (TunPacket | null)[] {
  const ack = ipv4(OWN + 10, REMOTE + 20, PROTO_TCP, tcp(round * MSS, 0, ACK));
  return [
    { hdr: PLAIN_HDR, bytes: ipv4(OWN + 10, REMOTE + 20, PROTO_ICMP, echo(0, 56, round)) },
    { hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_NONE, 0, 16), bytes: partialChecksum(ack, PROTO_TCP, 16) },
    null,
  ];
}

/** A TCP super-packet as large as TSO makes them (45 segments). */
function bulkSuperPacket(round: number): TunPacket {
  const seq = (round * 45 * MSS + 0xfff00000) >>> 0;
  return { hdr: hdr(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, MSS, 16, 52), bytes: partialChecksum(ipv4(OWN + 10, REMOTE + 20, PROTO_TCP, tcp(seq, 45 * MSS - (round % 3) * 500, ACK | PSH), { id: round }), PROTO_TCP, 16) };
}

/** A run of `count` TCP segments of one flow from the peer's pod, sent as one GSO run (GRO hands it over glued). */
function tcpRun(round: number, count: number, from = REMOTE + 20): Datagram[] {
  const seq0 = (round * 104729 * MSS + 0xfff00000) >>> 0;
  const run: Datagram[] = [];
  const size = 20 + 32 + MSS;
  for (let k = 0; k < count; k++) {
    // The last segment of a run is often short (a write's end, PSH).
    const last = k === count - 1;
    const t = tcp(seq0 + k * MSS, last && round % 2 === 0 ? MSS / 2 : MSS, last ? ACK | PSH : ACK);
    const bytes = fullChecksum(ipv4(from, OWN + 10, PROTO_TCP, t, { id: (round * count + k) & 0xffff }), PROTO_TCP, 16);
    run.push({ bytes, gsoSize: size });
  }
  return run;
}

/** What a rx worker receives from the peer, in send groups: every kind its code branches on. */
function udpCorpus(round: number): Datagram[][] {
  const from = (round % 2 === 0 ? REMOTE : REMOTE_HIGH) + 20;
  const to = OWN + 10;
  const single = (bytes: Uint8Array): Datagram[] => [{ bytes, gsoSize: 0 }];
  const badSum = ipv4(from, to, PROTO_ICMP, echo(0, 56, round));
  badSum[10]! ^= 0xff;
  return [
    single(ipv4(from, to, PROTO_ICMP, echo(0, 56, round))),
    tcpRun(round, 8, from),
    single(fullChecksum(ipv4(from, to, PROTO_TCP, tcp(round, 0, ACK)), PROTO_TCP, 16)),
    single(fullChecksum(ipv4(from, to, PROTO_UDP, udp(1200)), PROTO_UDP, 6)),
    single(ipv4(ip4(10, 255, 3, 1), to, PROTO_ICMP, echo(0, 56, round))), // a source subnet the sender does not hold
    single(ipv4(from, ip4(10, 255, 3, 1), PROTO_ICMP, echo(0, 56, round))), // not for our subnet
    single(badSum),
  ];
}

/** Sends the corpus from a socket of its own on 127.0.0.1: into the stand-in TUN queue, or to the stand-in peer socket. */
class Injector {
  readonly fd: number;
  readonly port: number;
  private readonly batch = new PacketBatch(64, 65536);
  constructor(private readonly addon: NativeAddon) {
    this.fd = addon.udpOpen('127.0.0.1', 0, false);
    this.port = addon.udpLocalPort(this.fd);
  }
  send(toPort: number, group: Datagram[], prefix: Uint8Array | null = null): void {
    const b = this.batch;
    const n = Math.min(group.length, b.capacity);
    const pre = prefix?.length ?? 0;
    for (let i = 0; i < n; i++) {
      const d = group[i]!;
      const at = i * b.slotSize;
      if (prefix) b.buf.set(prefix, at);
      b.buf.set(d.bytes, at + pre);
      b.lens[i] = d.bytes.length + pre;
      b.addrs[i] = LOOPBACK;
      b.ports[i] = toPort;
    }
    this.addon.udpSend(this.fd, b.buf, b.slotSize, b.lens, b.addrs, b.ports, n, group[0]!.gsoSize > 0, false);
  }
}

/**
 * Run this worker's mover classes over the corpus (see above). IPv4 routing
 * only: workers of IPv6 pods start as they always did. Returns what the
 * movers counted on the corpus (a counter region of their own), or null
 * when nothing was primed.
 */
export function primeMovers(addon: NativeAddon, cfg: WorkerConfig): Float64Array | null {
  if (!cfg.prime || cfg.routes6 || cfg.endpoints6) return null;
  const fds: number[] = [];
  try {
    const injector = new Injector(addon);
    fds.push(injector.fd);
    const tunSide = addon.udpOpen('127.0.0.1', 0, false);
    fds.push(tunSide);
    const peerSide = addon.udpOpen('127.0.0.1', 0, false);
    fds.push(peerSide);
    if (cfg.role === 'rx' && cfg.udpGro) enableUdpGro(addon, peerSide);
    if (!loopbackWorks(addon, injector, peerSide, addon.udpLocalPort(peerSide))) return null;
    return prime(addon, cfg, injector, tunSide, addon.udpLocalPort(tunSide), peerSide, addon.udpLocalPort(peerSide));
  } catch {
    // No loopback sockets here: the worker starts unprimed, as before.
    return null;
  } finally {
    for (const fd of fds) addon.close(fd);
  }
}

/** One datagram through 127.0.0.1 (`lo` may be down in a namespace): whether the corpus would arrive. */
function loopbackWorks(addon: NativeAddon, injector: Injector, fd: number, port: number): boolean {
  injector.send(port, [{ bytes: Buffer.alloc(28), gsoSize: 0 }]);
  if (addon.waitReadable?.(fd, 100) !== true) return false;
  const b = new PacketBatch(1, 64);
  return addon.udpRecv(fd, b.buf, b.slotSize, b.lens, b.addrs, b.ports, 1, 0) === 1;
}

function prime(addon: NativeAddon, cfg: WorkerConfig, injector: Injector, tunSide: number, tunPort: number, peerSide: number, peerPort: number): Float64Array {
  // The peer is the injector: what the movers send lands in its queue, unread; what it sends passes the source check.
  const routes = createRouteTableBuffer(8);
  const table = new RouteTableWriter(routes);
  const publish = (r: number) =>
    table.publish({
      ownNet: OWN,
      ownPrefixLen: 24,
      network: ip4(10, 255, 0, 0),
      networkPrefixLen: 16,
      icmpSource: ip4(10, 255, 0, 0),
      routes: [
        { net: REMOTE, prefixLen: 24, peer: LOOPBACK, port: injector.port },
        { net: REMOTE_HIGH, prefixLen: 24, peer: LOOPBACK, port: injector.port },
        { net: UNREACHABLE, prefixLen: 24, peer: ip4(192, 0, 2, 254), port: 8285 },
        // Leases come and go: the workers take a new table now and then.
        ...(r % 2 === 0 ? [{ net: ip4(10, 255, 7, 0), prefixLen: 25, peer: ip4(192, 0, 2, 7), port: 8285 }] : []),
      ],
    });
  publish(0);
  const locks = new SharedArrayBuffer(8);
  new Int32Array(locks)[1] = 1; // the (absent) tx worker sleeps: the rx mover sends replies itself
  // pollMs 1: a datagram the kernel dropped must not stall the corpus for a real poll time.
  const scratch: WorkerConfig = { ...cfg, queue: 0, tunFd: tunSide, udpFd: peerSide, routes, tunReadLocks: locks, counters: createCounterBuffer(), pollMs: 1 };
  const counters = counterRegion(scratch.counters, workerRegion(cfg.role, 0));
  const { tun, udp } = queueDevices(addon, scratch);
  // The stand-in TUN queue gets what the kernel would hand over: with offloads, a virtio_net_hdr first.
  const toTun = (p: TunPacket) => injector.send(tunPort, [{ bytes: p.bytes, gsoSize: 0 }], cfg.offload ? p.hdr : null);
  if (cfg.role === 'tx') {
    const tx = new TunToUdp(tun, udp, PLAIN, routing(scratch), counters, scratch);
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 50 === 49) publish(r);
      for (const p of tunCorpus(r, cfg.uso, cfg.pathMtu)) {
        toTun(p);
        // A packet alone (a round trip's case), and with others in one read (bulk).
        if (r % 2 === 0) tx.drain(1);
      }
      tx.drain(4);
      // Now and then more than one batch holds: a read's segments wait for the next call.
      if (r % 20 === 0 && cfg.offload) {
        for (let k = 0; k < 16; k++) toTun(bulkSuperPacket(r + k));
        tx.drain(64);
      }
    }
    return counters;
  }
  const rx = new UdpToTun(addon, tun, udp, PLAIN, routing(scratch), counters, scratch);
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 50 === 49) publish(r);
    // Now and then more than a batch arrives at once: GRO runs are cut across calls.
    if (r % 20 === 0) {
      for (let k = 0; k < 12; k++) injector.send(peerPort, tcpRun(r + k, 40));
      while (rx.move(0) > 0);
    }
    for (const group of udpCorpus(r)) {
      injector.send(peerPort, group);
      if (r % 2 === 0) {
        // What the kernel answers during the write (an echo reply, a TCP ACK), or nothing.
        const answer = replies(r)[(r >> 1) % 3];
        if (answer) toTun(answer);
        rx.move(); // with the socket's own timeout, as the loop calls it (a datagram is waiting: no wait)
      }
    }
    while (rx.move(0) > 0);
  }
  return counters;
}
