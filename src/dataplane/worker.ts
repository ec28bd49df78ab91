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

function runRx(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const routes = new RouteTableReader(cfg.routes);
  const counters = counterRegion(cfg.counters, REGION_RX);
  const batch = new PacketBatch(cfg.batchSize, cfg.slotSize);
  const { buf, lens, addrs, ports } = batch;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const n = addon.udpRecv(cfg.udpFd, buf, cfg.slotSize, lens, addrs, ports, cfg.batchSize, cfg.pollMs);
    if (n === 0) continue;
    counters[C.rxBatches] += 1;
    routes.refresh();
    const m = acceptFromUdp(batch, n, routes, counters);
    if (m > 0) accountDelivered(m, addon.tunWrite(cfg.tunFd, buf, cfg.slotSize, lens, m), counters);
  }
}

const cfg = workerData as WorkerConfig;
const control = new Int32Array(cfg.control);
try {
  const addon = loadNative();
  if (cfg.role === 'tx') runTx(addon, cfg, control);
  else runRx(addon, cfg, control);
} catch (err) {
  // Only fd-level failures reach here (the addon drops and counts per-packet errors).
  // If we are stopping, the fds may already be closed: that is not an error.
  if (Atomics.load(control, CONTROL_STOP) === 0) {
    const e = err as Error & { code?: string };
    counterRegion(cfg.counters, cfg.role === 'tx' ? REGION_TX : REGION_RX)[C.ioErrors] += 1;
    parentPort?.postMessage({ type: 'fatal', role: cfg.role, message: e.message, code: e.code });
  }
}
