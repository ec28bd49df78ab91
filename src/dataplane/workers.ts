/**
 * Main-thread side of the udp packet workers (packet-loop.ts): starts one
 * worker per direction and queue on already-open fds (queue q = flannel0's
 * q-th queue and the q-th UDP socket of the SO_REUSEPORT group) and stops
 * them through a flag in shared memory (their event loops are busy in the
 * packet loop, so postMessage would not be seen).
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { EncapsulationSpec } from './encapsulation.js';

export const CONTROL_STOP = 0;

/** What a worker thread receives as workerData (all fields structured-clonable). */
export interface WorkerConfig {
  role: 'tx' | 'rx';
  /** Which queue this worker serves (its counter region). */
  queue: number;
  tunFd: number;
  udpFd: number;
  routes: SharedArrayBuffer;
  /** IPv4 pods are carried (`routes`); false for a device with IPv6 pods only. */
  ipv4Pods: boolean;
  /** IPv6 pods are carried: their route table (routes6.ts). */
  routes6?: SharedArrayBuffer;
  /** Peers are named by endpoint ids into this table (endpoints6.ts), on an IPv6 socket. */
  endpoints6?: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  control: SharedArrayBuffer;
  slotSize: number;
  batchSize: number;
  /** Largest inner packet the underlay carries in one datagram (tx only). */
  pathMtu: number;
  /** How long one blocking read may wait; bounds the stop latency. */
  pollMs: number;
  /**
   * The TUN fd was opened with IFF_VNET_HDR and TUNSETOFFLOAD succeeded: the
   * TunDevice segments super-packets on read (tun/offload.ts) and tx sends
   * with UDP GSO; every TUN write carries a virtio_net_hdr.
   */
  offload: boolean;
  /**
   * With offload: glue received TCP segments into super-packets before the
   * TUN write (tun/gro.ts); false keeps one TUN write per datagram.
   */
  rxCoalesce: boolean;
  /** UDP_GRO is on for the socket: super-datagrams are cut on receive (conn/udp-socket.ts). */
  udpGro: boolean;
  /** The TUN fd has USO: UDP super-packets on read, UDP coalescing on write. */
  uso: boolean;
  /** Two words per queue: who may read the queue's TUN fd, and whether its tx worker sleeps (packet-loop.ts QueueReadLock). */
  tunReadLocks: SharedArrayBuffer;
  /** The rx worker sends what the kernel puts into TUN during its writes (replies), instead of waking the tx worker. */
  replyFastPath: boolean;
  /** Run the packet code over loopback sockets before touching the fds (prime.ts). */
  prime: boolean;
  /** Lone packets of the plain encapsulation over IPv4 hop in C (native-hop.ts). */
  nativeHop: boolean;
  /** The encapsulation to load (default bare packets). */
  encapsulation?: EncapsulationSpec;
}

/** One queue's fds: a flannel0 queue and its UDP socket. */
export interface QueueFds {
  tunFd: number;
  udpFd: number;
}

export type WorkerOptions = Omit<WorkerConfig, 'role' | 'control' | 'queue' | 'tunFd' | 'udpFd' | 'tunReadLocks'> & { queues: QueueFds[] };

export class PacketWorkers {
  private readonly control = new SharedArrayBuffer(4);
  private readonly flags = new Int32Array(this.control);
  private readonly workers: Worker[] = [];
  private readonly exited: Promise<void>[] = [];

  constructor(
    private readonly opts: WorkerOptions,
    private readonly log: Logger,
    /** Called when a worker dies on an fd-level error (the dataplane is then down in that direction). */
    private readonly onFatal: (role: string, err: Error) => void = () => {},
    /** What an encapsulation posted (WireGuard: handshakes, roaming). */
    private readonly onEncapMessage: (msg: unknown) => void = () => {},
  ) {}

  start(): void {
    const { queues, ...common } = this.opts;
    // Per queue: the read lock word, then (second half) whether its tx worker sleeps.
    const tunReadLocks = new SharedArrayBuffer(4 * 2 * queues.length);
    queues.forEach((fds, queue) => {
      for (const role of ['tx', 'rx'] as const) this.spawn({ ...common, ...fds, role, queue, control: this.control, tunReadLocks });
    });
  }

  private spawn(cfg: WorkerConfig): void {
    const { role, queue } = cfg;
    const w = new Worker(new URL('./packet-loop.js', import.meta.url), { workerData: cfg, name: `flannel-udp-${role}${queue}` });
    w.on('message', (m: { type: string; role: string; message: string; code?: string; body?: unknown }) => {
      if (m.type === 'encap') return this.onEncapMessage(m.body);
      if (m.type !== 'fatal') return;
      const err = Object.assign(new Error(m.message), { code: m.code });
      this.log.error('packet worker failed', { role: m.role, queue, error: m.message, code: m.code });
      this.onFatal(m.role, err);
    });
    w.on('error', (err) => {
      this.log.error('packet worker crashed', { role, queue, error: err });
      this.onFatal(role, err);
    });
    this.exited.push(new Promise((resolve) => w.once('exit', () => resolve())));
    this.workers.push(w);
  }

  /**
   * Raise the stop flag and wait for every loop to notice (within one poll
   * timeout); a worker stuck past `timeoutMs` is terminated.
   */
  async stop(timeoutMs = 2000): Promise<void> {
    Atomics.store(this.flags, CONTROL_STOP, 1);
    const all = Promise.all(this.exited);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.log.warn('packet workers did not stop in time; terminating them', { timeoutMs });
      await Promise.all(this.workers.map((w) => w.terminate()));
    }
    this.workers.length = 0;
  }
}
