/**
 * Entry module of a udp packet worker thread (one per direction). The loop
 * is synchronous: each turn moves one batch, and every read waits at most
 * `pollMs`, so the stop flag in shared memory is seen within that time even
 * though this thread's event loop never runs. Nothing crosses postMessage
 * per packet; only a fatal error is posted.
 *
 * Both directions are one loop whatever the offloads: TunDevice hands out
 * and takes plain packets (segmenting and coalescing behind it), UdpSocket
 * moves datagrams, pipeline.ts routes and checks, the Encapsulation turns
 * packets into datagrams and back.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { loadNative, type NativeAddon } from '../../native/addon.js';
import { TunDevice } from '../../tun/device.js';
import { MAX_SEGMENTS } from '../../tun/offload.js';
import { PacketBatch } from '../../tun/packet-batch.js';
import { UdpSocket } from '../../conn/udp-socket.js';
import { UdpCounter, counterRegion, workerRegion } from './counters.js';
import { RouteTableReader } from './routes.js';
import { accountDelivered, accountSent, acceptFromUdp, forwardFromTun, IcmpLimiter, ICMP_SLOT } from './pipeline.js';
import { PLAIN, type Encapsulation } from './encapsulation.js';
import { CONTROL_STOP, type WorkerConfig } from './workers.js';
import { WireGuardTransport } from '../../wireguard/transport.js';
import { wgCounterRegion, WG_REGION_RX, WG_REGION_TX } from '../../wireguard/counters.js';

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

/** TUN -> route -> seal -> UDP, with ICMP errors for what cannot be sent written back into TUN. */
function runTx(tun: TunDevice, udp: UdpSocket, encap: Encapsulation, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, workerRegion('tx', cfg.queue));
  const batch = new PacketBatch(tun.offload ? SEGMENT_BATCH : cfg.batchSize, cfg.slotSize);
  const icmp = new PacketBatch(cfg.batchSize, ICMP_SLOT);
  const limiter = new IcmpLimiter();
  const rc = tun.readCounts;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = tun.read(batch);
    // Packets the device could not expand count as read and dropped as malformed, like any bad packet.
    counters[UdpCounter.txBatches] += rc.syscalls;
    counters[UdpCounter.tunSuperPackets] += rc.superPackets;
    counters[UdpCounter.tunSegments] += rc.segments;
    counters[UdpCounter.tunUdpSuperPackets] += rc.udpSuperPackets;
    counters[UdpCounter.tunRead] += rc.malformed;
    counters[UdpCounter.txMalformed] += rc.malformed;
    if (n === 0) continue;
    routes.refresh();
    limiter.refill(performance.now());
    icmp.count = 0;
    const m = encap.seal(batch, forwardFromTun(batch, n, routes, icmp, limiter, counters, cfg.pathMtu));
    if (m > 0) accountSent(batch, m, udp.send(batch, m, tun.offload, encap.bareInner), counters);
    if (icmp.count > 0) counters[UdpCounter.icmpWriteFailed] += icmp.count - tun.writeUncoalesced(icmp, icmp.count);
  }
}

/** UDP -> open -> check -> TUN (coalesced into super-packets when the device does that). */
function runRx(tun: TunDevice, udp: UdpSocket, encap: Encapsulation, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, workerRegion('rx', cfg.queue));
  const batch = new PacketBatch(rxBatchSize(cfg), cfg.slotSize);
  const wc = tun.writeCounts;
  const rc = udp.recvCounts;
  // The socket's overflow count starts at 0; the region may hold counts of sockets before a restart.
  const overflowBase = counters[UdpCounter.rxSocketOverflow]!;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = udp.recv(batch);
    if (n === 0) continue;
    counters[UdpCounter.rxBatches] += rc.syscalls;
    counters[UdpCounter.rxGroSuperDatagrams] += rc.superDatagrams;
    counters[UdpCounter.rxGroSegments] += rc.segments;
    counters[UdpCounter.rxSocketOverflow] = overflowBase + udp.drops[0]!;
    routes.refresh();
    const m = acceptFromUdp(batch, encap.open(batch, n), routes, counters);
    if (m === 0) continue;
    accountDelivered(m, tun.write(batch, m), counters);
    counters[UdpCounter.rxSuperPackets] += wc.superPackets;
    counters[UdpCounter.rxCoalescedSegments] += wc.coalescedSegments;
  }
}

function rxBatchSize(cfg: WorkerConfig): number {
  return cfg.offload && cfg.rxCoalesce ? Math.min(Math.max(cfg.batchSize, RX_COALESCE_BATCH), SEGMENT_BATCH) : cfg.batchSize;
}

function run(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const tun = new TunDevice(addon, cfg.tunFd, {
    offload: cfg.offload,
    coalesce: cfg.role === 'rx' && cfg.rxCoalesce,
    uso: cfg.uso,
    pollMs: cfg.pollMs,
    superBatch: Math.min(cfg.batchSize, SUPER_BATCH),
    writeCapacity: rxBatchSize(cfg),
  });
  const udp = new UdpSocket(addon, cfg.udpFd, cfg.pollMs, { gro: cfg.role === 'rx' && cfg.udpGro });
  (cfg.role === 'tx' ? runTx : runRx)(tun, udp, encapsulation(addon, cfg), cfg, control);
}

/** PLAIN for flannel's udp backend; WireGuard's seal/open for the wireguard backend's userspace path. */
function encapsulation(addon: NativeAddon, cfg: WorkerConfig): Encapsulation {
  const wg = cfg.wireguard;
  if (!wg) return PLAIN;
  const stats = wgCounterRegion(wg.counters, cfg.role === 'tx' ? WG_REGION_TX : WG_REGION_RX);
  // Handshakes are rare and the main thread's: a copy each, posted (the per-second budget bounds a flood).
  const handshake = (msg: Buffer, addr: number, port: number) => parentPort?.postMessage({ type: 'handshake', data: msg, addr, port });
  return new WireGuardTransport(addon, wg, stats, handshake);
}

const cfg = workerData as WorkerConfig;
const control = new Int32Array(cfg.control);
try {
  run(loadNative(), cfg, control);
} catch (err) {
  // Only fd-level failures reach here (the addon drops and counts per-packet errors).
  // If we are stopping, the fds may already be closed: that is not an error.
  if (Atomics.load(control, CONTROL_STOP) === 0) {
    const e = err as Error & { code?: string };
    counterRegion(cfg.counters, workerRegion(cfg.role, cfg.queue))[UdpCounter.ioErrors] += 1;
    parentPort?.postMessage({ type: 'fatal', role: cfg.role, message: e.message, code: e.code });
  }
}
