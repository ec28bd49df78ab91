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
import { setFlagsFromString } from 'node:v8';
import { loadNative, type NativeAddon } from '../native/addon.js';
import type { TunDevice } from '../tun/device.js';
import type { UdpSocket } from '../conn/udp-socket.js';
import { UdpCounter, counterRegion, workerRegion } from './counters.js';
import { PLAIN, type Encapsulation, type EncapsulationFactory } from './encapsulation.js';
import { moveWithHop, QueueReadLock, queueDevices, routing, sharesTunReads, TunToUdp, UdpToTun } from './movers.js';
import { NativeHop, nativeHopEncapsulation } from './native-hop.js';
import { primeMovers } from './prime.js';
import { CONTROL_STOP, type WorkerConfig } from './workers.js';

/** TUN -> route -> seal -> UDP. */
function runTx(addon: NativeAddon, tun: TunDevice, udp: UdpSocket, encap: Encapsulation, cfg: WorkerConfig, control: Int32Array): void {
  const counters = counterRegion(cfg.counters, workerRegion('tx', cfg.queue));
  const fwd = new TunToUdp(tun, udp, encap, routing(cfg), counters, cfg);
  const hopEncap = nativeHopEncapsulation(addon, cfg, encap);
  if (hopEncap) {
    runTxWithHop(fwd, new NativeHop(addon, cfg, counters, { tx: fwd.readSlots() }, hopEncap), addon, cfg, control);
    return;
  }
  if (!sharesTunReads(addon, cfg)) {
    while (Atomics.load(control, CONTROL_STOP) === 0) fwd.move(cfg.pollMs);
    return;
  }
  const lock = new QueueReadLock(cfg.tunReadLocks, cfg.queue);
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    lock.acquire();
    let moved = 0;
    try {
      moved = fwd.drain(1);
    } finally {
      lock.release();
    }
    // Wait without reading: the read itself must happen under the lock.
    if (moved === 0) {
      lock.setTxIdle(true);
      tun.waitReadable(cfg.pollMs);
      lock.setTxIdle(false);
    }
  }
}

/**
 * The tx loop with hop.c: it waits, reads, and sends a lone packet itself
 * (under the queue's read lock when the rx worker shares the reads); what
 * it read and left, or a queue it found locked, is moved here.
 */
function runTxWithHop(fwd: TunToUdp, hop: NativeHop, addon: NativeAddon, cfg: WorkerConfig, control: Int32Array): void {
  const lock = sharesTunReads(addon, cfg) ? new QueueReadLock(cfg.tunReadLocks, cfg.queue) : null;
  while (Atomics.load(control, CONTROL_STOP) === 0) {
    const r = hop.tx(cfg.pollMs);
    if (r === 0) continue;
    if (r > 0) fwd.tun.adopt(r);
    else lock?.acquire();
    try {
      fwd.drain(1);
    } finally {
      lock?.release();
    }
  }
}

/** UDP -> open -> check -> TUN (coalesced into super-packets when the device does that). */
function runRx(addon: NativeAddon, tun: TunDevice, udp: UdpSocket, encap: Encapsulation, cfg: WorkerConfig, control: Int32Array): void {
  const counters = counterRegion(cfg.counters, workerRegion('rx', cfg.queue));
  const rx = new UdpToTun(addon, tun, udp, encap, routing(cfg), counters, cfg);
  const hopEncap = nativeHopEncapsulation(addon, cfg, encap);
  if (hopEncap) {
    const hop = new NativeHop(addon, cfg, counters, rx.hopSlots(), hopEncap);
    while (Atomics.load(control, CONTROL_STOP) === 0) moveWithHop(rx, hop, cfg.pollMs);
    return;
  }
  while (Atomics.load(control, CONTROL_STOP) === 0) rx.move();
}

function run(addon: NativeAddon, cfg: WorkerConfig, control: Int32Array, encap: Encapsulation): void {
  primeMovers(addon, cfg);
  const { tun, udp } = queueDevices(addon, cfg);
  (cfg.role === 'tx' ? runTx : runRx)(addon, tun, udp, encap, cfg, control);
}

/** PLAIN for flannel's udp backend; else the spec's module (WireGuard's seal/open for the wireguard backend). */
async function encapsulation(addon: NativeAddon, cfg: WorkerConfig): Promise<Encapsulation> {
  const spec = cfg.encapsulation;
  if (!spec) return PLAIN;
  const create = (await import(spec.module)).createEncapsulation as EncapsulationFactory;
  return create(addon, spec.config, {
    role: cfg.role,
    endpoints6: cfg.endpoints6 ? new Uint8Array(cfg.endpoints6) : null,
    // Rare events only (handshakes, roaming): a copy each, bounded by the encapsulation.
    post: (body) => parentPort?.postMessage({ type: 'encap', body }),
  });
}

/**
 * How soon V8 compiles a function again after it threw the compiled code
 * away (a packet kind or value range it had not seen). By default a
 * function runs about 66 KB of bytecode per tier-up tick, so after a
 * deoptimisation under a few packets a second (pings, requests) the loop
 * stays in the baseline tier for minutes. An eighth of it (process-wide:
 * the main thread tiers up sooner too, which costs nothing that matters)
 * took the syscall-to-syscall JS time of a tx hop from 43-51 us to 27-34
 * and RTT p50 from 0.69 to 0.63 ms (bench/PROFILE.md, 2026-12-06).
 */
setFlagsFromString('--interrupt-budget=8192');

const cfg = workerData as WorkerConfig;
const control = new Int32Array(cfg.control);
try {
  const addon = loadNative();
  run(addon, cfg, control, await encapsulation(addon, cfg));
} catch (err) {
  // Only fd-level failures reach here (the addon drops and counts per-packet errors).
  // If we are stopping, the fds may already be closed: that is not an error.
  if (Atomics.load(control, CONTROL_STOP) === 0) {
    const e = err as Error & { code?: string };
    counterRegion(cfg.counters, workerRegion(cfg.role, cfg.queue))[UdpCounter.ioErrors] += 1;
    parentPort?.postMessage({ type: 'fatal', role: cfg.role, message: e.message, code: e.code });
  }
}
