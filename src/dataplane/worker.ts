/**
 * Entry module of a packet worker thread (one per direction). The loop is
 * synchronous: each turn moves one batch through the native addon, whose
 * read calls wait at most `pollMs`, so the stop flag in shared memory is seen
 * within that time even though this thread's event loop never runs.
 * Nothing crosses postMessage per packet; only a fatal error is posted.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { loadNative, type NativeAddon } from './native.js';
import { C, counterRegion, REGION_RX, REGION_TX } from './counters.js';
import { RouteTableReader } from './routes.js';
import { accountDelivered, accountSent, acceptFromUdp, forwardFromTun, IcmpLimiter, ICMP_SLOT, PacketBatch } from './pipeline.js';
import { CONTROL_STOP, type WorkerConfig } from './workers.js';
import { expandFromTun, VNET_HDR_LEN, wordView } from './offload.js';
// SUPER_SLOT: the largest IP packet a TUN read can return with TSO on (IPv4 total length is 16 bits).
import { RxCoalescer, SUPER_SLOT } from './gro.js';

/** Super-packets per tunRead with offloads: 16 x 64 KB fills ~730 segment slots. */
const SUPER_BATCH = 16;
/** Segment slots per send: udpSend's limit (UIO_MAXIOV). */
const SEGMENT_BATCH = 1024;
/**
 * Datagrams per recvmmsg when coalescing: more per batch means longer
 * super-packets. Profile (one TCP stream): 64 -> 60 datagrams/batch, 27
 * segments per super-packet, 3.45 Gbit/s; 256 -> 183/batch, 39 per
 * super-packet, 4.08 Gbit/s; 1024 was no better. Costs 256 x 64 KB of
 * (mostly untouched) output slots.
 */
const RX_COALESCE_BATCH = 256;

function runTx(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, REGION_TX);
  const batch = new PacketBatch(cfg.batchSize, cfg.slotSize);
  const icmp = new PacketBatch(cfg.batchSize, ICMP_SLOT);
  const limiter = new IcmpLimiter();
  const { buf, lens, addrs, ports } = batch;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = addon.tunRead(cfg.tunFd, buf, cfg.slotSize, lens, cfg.batchSize, cfg.pollMs);
    if (n === 0) continue;
    counters[C.txBatches] += 1;
    routes.refresh();
    limiter.refill(performance.now());
    icmp.count = 0;
    const m = forwardFromTun(batch, n, routes, icmp, limiter, counters, cfg.pathMtu);
    if (m > 0) accountSent(batch, m, addon.udpSend(cfg.udpFd, buf, cfg.slotSize, lens, addrs, ports, m), counters);
    if (icmp.count > 0) {
      const w = addon.tunWrite(cfg.tunFd, icmp.buf, ICMP_SLOT, icmp.lens, icmp.count);
      counters[C.icmpWriteFailed] += icmp.count - w;
    }
  }
}

/**
 * tx with offloads: read super-packets, cut them into flannel-sized
 * packets, then run the same per-packet checks as runTx on the segments and
 * send them with UDP GSO.
 */
function runTxOffload(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, REGION_TX);
  const inb = new PacketBatch(Math.min(cfg.batchSize, SUPER_BATCH), SUPER_SLOT);
  const hdrs = new Uint8Array(inb.capacity * VNET_HDR_LEN);
  const out = new PacketBatch(SEGMENT_BATCH, cfg.slotSize);
  const outWords = wordView(out.buf);
  const icmp = new PacketBatch(cfg.batchSize, ICMP_SLOT);
  const icmpHdrs = new Uint8Array(icmp.capacity * VNET_HDR_LEN); // all zero: plain packets
  const limiter = new IcmpLimiter();
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = addon.tunRead(cfg.tunFd, inb.buf, SUPER_SLOT, inb.lens, inb.capacity, cfg.pollMs, hdrs);
    if (n === 0) continue;
    counters[C.txBatches] += 1;
    routes.refresh();
    limiter.refill(performance.now());
    let i = 0;
    while (i < n) {
      out.count = 0;
      i = expandFromTun(inb, hdrs, i, n, out, outWords, counters);
      icmp.count = 0;
      const m = forwardFromTun(out, out.count, routes, icmp, limiter, counters, cfg.pathMtu);
      if (m > 0) accountSent(out, m, addon.udpSend(cfg.udpFd, out.buf, cfg.slotSize, out.lens, out.addrs, out.ports, m, true), counters);
      if (icmp.count > 0) {
        const w = addon.tunWrite(cfg.tunFd, icmp.buf, ICMP_SLOT, icmp.lens, icmp.count, icmpHdrs);
        counters[C.icmpWriteFailed] += icmp.count - w;
      }
    }
  }
}

function runRx(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, REGION_RX);
  const batch = new PacketBatch(cfg.batchSize, cfg.slotSize);
  const { buf, lens, addrs, ports } = batch;
  // A vnet-header TUN needs a header before every packet; zero = plain packet, checksum complete.
  const hdrs = cfg.offload ? new Uint8Array(cfg.batchSize * VNET_HDR_LEN) : null;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = addon.udpRecv(cfg.udpFd, buf, cfg.slotSize, lens, addrs, ports, cfg.batchSize, cfg.pollMs);
    if (n === 0) continue;
    counters[C.rxBatches] += 1;
    routes.refresh();
    const m = acceptFromUdp(batch, n, routes, counters);
    if (m > 0) accountDelivered(m, addon.tunWrite(cfg.tunFd, buf, cfg.slotSize, lens, m, hdrs), counters);
  }
}

/**
 * rx with offloads: the same per-packet checks, then consecutive TCP
 * segments of a flow are glued into super-packets (gro.ts) and the batch
 * goes to TUN in one tunWrite, each write counting the packets it carries.
 */
function runRxCoalesce(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, REGION_RX);
  const size = Math.min(Math.max(cfg.batchSize, RX_COALESCE_BATCH), SEGMENT_BATCH);
  const batch = new PacketBatch(size, cfg.slotSize);
  const inWords = wordView(batch.buf);
  const { buf, lens, addrs, ports } = batch;
  const gro = new RxCoalescer(size);
  const { out, hdrs, segs } = gro;
  // TCP checksum sums computed in C: 0.10-0.13 us per 1.4 KB segment vs 0.40 in JS (sum16);
  // with it the rx thread's user time fell from 1.07 to 0.60 us per datagram (profile).
  const sums = new Uint16Array(size);
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = addon.udpRecv(cfg.udpFd, buf, cfg.slotSize, lens, addrs, ports, size, cfg.pollMs);
    if (n === 0) continue;
    counters[C.rxBatches] += 1;
    routes.refresh();
    const m = acceptFromUdp(batch, n, routes, counters);
    if (m === 0) continue;
    addon.sumSlots(buf, cfg.slotSize, lens, m, 20, sums);
    const w = gro.coalesce(batch, m, inWords, counters, sums);
    accountDelivered(m, addon.tunWrite(cfg.tunFd, out.buf, SUPER_SLOT, out.lens, w, hdrs, segs), counters);
  }
}

const cfg = workerData as WorkerConfig;
const control = new Int32Array(cfg.control);
try {
  const addon = loadNative();
  if (cfg.role === 'tx') (cfg.offload ? runTxOffload : runTx)(addon, cfg, control);
  else (cfg.offload && cfg.rxCoalesce !== false ? runRxCoalesce : runRx)(addon, cfg, control);
} catch (err) {
  // Only fd-level failures reach here (the addon drops and counts per-packet errors).
  // If we are stopping, the fds may already be closed: that is not an error.
  if (Atomics.load(control, CONTROL_STOP) === 0) {
    const e = err as Error & { code?: string };
    counterRegion(cfg.counters, cfg.role === 'tx' ? REGION_TX : REGION_RX)[C.ioErrors] += 1;
    parentPort?.postMessage({ type: 'fatal', role: cfg.role, message: e.message, code: e.code });
  }
}
