/**
 * The userspace dataplane: a TUN device whose packets are routed to the
 * peer owning the destination subnet, turned into datagrams by an
 * Encapsulation and sent on UDP sockets, and datagrams from peers opened,
 * checked against the sending peer's subnets and written back into it.
 * The kernel side is a /32 (/128) address and one route for the whole
 * Network on the device; the per-peer routing happens in the packet workers
 * (packet-loop.ts, over src/tun and src/conn), which this class feeds with
 * lease events through shared route tables. flannel's udp backend
 * (backend/udp, bare packets) and the wireguard backend's userspace path
 * (backend/wireguard, WireGuard's seal/open) are its two users.
 *
 * Routes name peers by a u32 "peer id" that the encapsulation defines: for
 * bare packets the peer's endpoint (flannel's udp has no keys: the source
 * address is all a datagram says about its sender); for WireGuard the slot
 * of the peer's public key, so a packet is attributed to the key that
 * opened it, whatever its outer address (cryptokey routing).
 */
import type { BackendContext } from '../backend/types.js';
import type { Lease, LeaseEvent } from '../subnet/types.js';
import { formatIP4, formatIP4Net, formatIP6, formatIP6Net, ip4NetEqual, ip6NetEqual, parseIP4, type IP4Net, type IP6Net } from '../net/ipaddr.js';
import { IpRoute, type IpRunner } from '../net/iproute.js';
import { loadNative, type NativeAddon } from '../native/addon.js';
import { openTun, openTunQueue } from '../tun/device.js';
import { ensureOnlyAddress } from '../net/device-address.js';
import { MAX_SEGMENTS } from '../tun/offload.js';
import { enableUdpGro, openUdpSocket } from '../conn/udp-socket.js';
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { createRouteTableBuffer, RouteTableWriter, type RouteEntry } from './routes.js';
import { createRouteTable6Buffer, RouteTable6Writer, words6, type Route6Entry } from './routes6.js';
import { EndpointIdsExhausted, EndpointTable6 } from './endpoints6.js';
import { describe as describeLease } from '../subnet/manager.js';
import { counterRegion, createCounterBuffer, MAX_WORKERS, REGION_MAIN, renderCounters, UdpCounter } from './counters.js';
import { PacketWorkers, type QueueFds } from './workers.js';
import type { EncapsulationSpec } from './encapsulation.js';
import { holdDevice, type Hold } from '../native/exclusive-lock.js';

/** Outer IPv4 header (20) + UDP header (8): what bare encapsulation costs per packet. */
export const UDP_ENCAP_OVERHEAD = 28;

export interface DataplaneOptions {
  /** TUN device name; flannel's is flannel0. */
  tunName?: string;
  ip?: IpRunner;
  addon?: NativeAddon;
  /** Packets per batch I/O call. */
  batchSize?: number;
  /** Longest wait of one read; bounds how fast stop() takes effect. */
  pollMs?: number;
  /**
   * flannel0's transmit queue (packets the kernel queues for our reader).
   * Linux's default of 500 overflows whenever the reader thread is briefly
   * descheduled at 100k+ packets/s, and each overflow is a TCP retransmit.
   */
  txQueueLen?: number;
  /** false: program the kernel side only, start no packet workers (plan/dry runs, unit tests). */
  dataplane?: boolean;
  /**
   * TUN offloads (src/tun/offload.ts): the kernel hands us TCP
   * super-packets which we segment ourselves, and datagrams leave with UDP
   * GSO; the wire format is unchanged. Default: ctx.dataplane.offload (on
   * unless FLANNEL_UDP_OFFLOAD=0); the plain path is used when the kernel
   * refuses TUNSETOFFLOAD.
   */
  offload?: boolean;
  /** UDP port to listen on and send to (udp's Port, wireguard's ListenPort). */
  port: number;
  /** Worker pairs wanted (udp's Workers option); default the daemon's. Encapsulations with per-keypair state run one. */
  workers?: number;
  /** Bytes the encapsulation adds per packet (flannel0's MTU = link MTU - this); default 28. */
  overhead?: number;
  /**
   * The encapsulation the packet workers load (default: bare packets,
   * flannel's udp wire format), with its shared state; it names peers by
   * its own ids (peerIdOf) and runs one worker pair.
   */
  encapsulation?: EncapsulationSpec;
  /** What the encapsulation in a worker posts to this thread (WireGuard: handshakes, roaming). */
  onEncapMessage?: (msg: unknown) => void;
  /** Called before the workers are restarted after one died (WireGuard drops its keypairs: new replay windows). */
  onRestart?: () => void;
  /** How routeList shows a peer id (default: the endpoint it is). */
  describePeer?: (peer: number) => string;
  /** The peer id routes to a lease's subnets name (default: the id of its PublicIP, or PublicIPv6 with IPv6 endpoints). null: not routed. */
  peerIdOf?: (lease: Lease) => number | null;
  /** The backend this dataplane serves, when not udp: names its metrics (flannel_<component>_...) and log lines. */
  component?: string;
  /**
   * The pod families this dataplane carries (default IPv4 only): IPv4 pods
   * (the lease's subnet, Network) and IPv6 pods (its IPv6 subnet,
   * IPv6Network), each with a route table of its own. With IPv6 pods it
   * runs one worker pair, with IPv6 TSO and coalescing but no USO (UDP
   * super-packets are cut for IPv4 only). The wireguard backend's devices.
   */
  pods?: { ipv4: boolean; ipv6: boolean };
  /**
   * How peers are reached: 'ipv4' (default) through an IPv4 socket on the
   * interface's address, a peer named by its u32 address; 'ipv6' through an
   * IPv6-only socket on its IPv6 address, 'dual' through one IPv6 socket on
   * :: that reaches IPv4 peers as ::ffff:a.b.c.d (WireGuard's Mode auto);
   * both name a peer by an endpoint id (endpoints6.ts).
   */
  endpoints?: EndpointMode;
  /**
   * Bind to every address of the family instead of the interface's own
   * (WireGuard: peers are told apart by their keys, not by the source
   * address, and a kernel WireGuard device listens on all addresses, so a
   * PublicIP that is another local address still reaches it).
   */
  bindAny?: boolean;
}

export type EndpointMode = 'ipv4' | 'ipv6' | 'dual';

/** Waits before restarting a dead dataplane: from 1 s, doubling up to 30 s while it keeps dying within a minute of a restart. */
const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;
const RESTART_STABLE_MS = 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Shortest time between two route-table publishes during a burst of lease events. */
const PUBLISH_INTERVAL_MS = 50;

export class UserspaceDataplane {
  readonly config: { port: number; workers?: number };
  readonly tunName: string;
  private readonly ip: IpRunner;
  private readonly log;
  private readonly routesSab = createRouteTableBuffer();
  private readonly routes = new RouteTableWriter(this.routesSab);
  readonly countersSab = createCounterBuffer();
  /** Remote subnets by "a.b.c.d/len". */
  private readonly peers = new Map<string, RouteEntry>();
  private ownSubnet: IP4Net | null = null;
  /** The pod families carried, how peers are reached; with IPv6 pods the IPv6 route table and its subnets by CIDR text. */
  readonly pods: { ipv4: boolean; ipv6: boolean };
  readonly endpointMode: EndpointMode;
  private readonly routes6Sab: SharedArrayBuffer | null;
  private readonly routes6: RouteTable6Writer | null;
  readonly endpoints6: EndpointTable6 | null;
  private readonly peers6 = new Map<string, Route6Entry>();
  private ownSubnet6: IP6Net | null = null;
  private addon: NativeAddon | null = null;
  /** This network namespace's hold on the device name (another daemon must not attach to its queues). */
  private deviceHold: Hold | null = null;
  /** flannel0's queues and their UDP sockets, one worker pair each. */
  private queues: QueueFds[] = [];
  private workers: PacketWorkers | null = null;
  private lastPublish = 0;
  private stopped = false;
  private restarting = false;
  private restartDelayMs = RESTART_MIN_MS;
  private workersStartedAt = 0;
  private publishTimer: NodeJS.Timeout | null = null;
  /** Whether flannel0 runs with offloads (decided at start). */
  offload = false;
  /** Whether flannel0 has UDP segmentation offload too. */
  uso = false;
  /** Whether the sockets have UDP GRO on. */
  udpGro = false;
  /** Worker pairs (queues) wanted: the Workers option, else the daemon's default. */
  readonly workerCount: number;

  constructor(
    private readonly ctx: BackendContext,
    private readonly opts: DataplaneOptions,
  ) {
    this.config = { port: opts.port, ...(opts.workers !== undefined ? { workers: opts.workers } : {}) };
    this.pods = opts.pods ?? { ipv4: true, ipv6: false };
    this.endpointMode = opts.endpoints ?? 'ipv4';
    // WireGuard's transport keeps one send counter and one replay window per keypair, written by a single worker each: one pair only.
    this.workerCount = opts.encapsulation || this.pods.ipv6 ? 1 : (this.config.workers ?? ctx.dataplane.workers ?? Math.min(availableParallelism(), MAX_WORKERS));
    this.tunName = opts.tunName ?? 'flannel0';
    this.ip = opts.ip ?? new IpRoute();
    // Under another backend (wireguard) this is that backend's dataplane.
    this.log = ctx.log.child(opts.component ? 'dataplane' : 'udp');
    if (this.pods.ipv4 && !ctx.config.network) throw new Error(opts.pods ? `${this.tunName} needs an IPv4 Network (EnableIPv4)` : 'udp backend needs an IPv4 Network (EnableIPv4); IPv6 is not supported by udp');
    if (this.pods.ipv6 && !ctx.config.ipv6Network) throw new Error(`${this.tunName} needs an IPv6Network (EnableIPv6)`);
    this.routes6Sab = this.pods.ipv6 ? createRouteTable6Buffer() : null;
    this.routes6 = this.routes6Sab ? new RouteTable6Writer(this.routes6Sab) : null;
    this.endpoints6 = this.endpointMode === 'ipv4' ? null : new EndpointTable6();
  }

  mtu(): number {
    return this.ctx.extIface.mtu - (this.opts.overhead ?? UDP_ENCAP_OVERHEAD);
  }

  /** The addon and the UDP socket of the running dataplane (the WireGuard device sends handshakes on it). */
  get socket(): { addon: NativeAddon; fd: number; endpoints6?: Uint8Array } | null {
    const q = this.queues[0];
    if (!this.addon || !q) return null;
    return this.endpoints6 ? { addon: this.addon, fd: q.udpFd, endpoints6: this.endpoints6.bytes } : { addon: this.addon, fd: q.udpFd };
  }

  /** Slot size of the packet buffers: room for any datagram the underlay link carries unfragmented. */
  private slotSize(): number {
    return Math.ceil(Math.max(this.ctx.extIface.mtu, 1500) / 2048) * 2048;
  }

  async start(ownLease: Lease): Promise<void> {
    if (this.queues.length > 0) throw new Error('udp backend already started');
    if (this.pods.ipv4 && !ownLease.subnet) throw new Error(`${this.opts.pods ? this.tunName : 'udp backend'} needs an IPv4 lease`);
    if (this.pods.ipv6 && !ownLease.ipv6Subnet) throw new Error(`${this.tunName} needs an IPv6 lease`);
    if (this.endpointMode === 'ipv6' && !this.opts.bindAny && !this.ctx.extIface.ifaceAddr6) throw new Error(`${this.tunName} needs an IPv6 address on the external interface ${this.ctx.extIface.name} (its endpoints are IPv6)`);
    this.ownSubnet = this.pods.ipv4 ? ownLease.subnet : null;
    this.ownSubnet6 = this.pods.ipv6 ? ownLease.ipv6Subnet : null;
    this.addon = this.opts.addon ?? loadNative();
    this.deviceHold = await holdDevice(this.tunName, 'network namespace');
    try {
      await this.openDevices();
    } catch (err) {
      await this.deviceHold.release();
      this.deviceHold = null;
      throw err;
    }
    this.publish();
    const prefix = `flannel_${this.opts.component ?? 'udp'}`;
    this.ctx.metrics.register(this.opts.component ?? 'udp', () => renderCounters(this.countersSab, prefix) + this.renderTunQueueDrops(prefix));
    if (this.opts.dataplane === false) return;
    this.startWorkers();
    this.log.info('udp dataplane started', {
      device: this.tunName,
      address: [this.ownSubnet ? formatIP4Net(this.ownSubnet) : '', this.ownSubnet6 ? formatIP6Net(this.ownSubnet6) : ''].filter(Boolean).join(' '),
      port: this.config.port,
      mtu: this.mtu(),
      offload: this.offload,
      rxCoalesce: this.rxCoalesce,
      uso: this.uso,
      udpGro: this.udpGro,
      workers: this.queues.length,
      ...(this.queues.length > 1 ? { tunSteered: this.tunSteered } : {}),
    });
  }

  /**
   * Packets the kernel dropped because flannel0's queue was full when our
   * tx workers fell behind (the TUN ring holds txqueuelen packets): the
   * first place overload sheds, before any of our counters sees a packet.
   * Read from sysfs at scrape time; nothing when it cannot be read.
   */
  private renderTunQueueDrops(prefix: string): string {
    let v: number;
    try {
      v = Number(readFileSync(`/sys/class/net/${this.tunName}/statistics/tx_dropped`, 'utf8').trim());
    } catch {
      return '';
    }
    if (!Number.isFinite(v)) return '';
    const name = `${prefix}_tun_queue_dropped_packets_total`;
    return `# HELP ${name} Packets the kernel dropped at the TUN device's full queue before a worker read them.\n# TYPE ${name} counter\n${name} ${v}\n`;
  }

  /**
   * Open and program flannel0 (one queue per worker pair; several make it a
   * multi-queue device, whose kernel side keeps each flow on one queue) and
   * a UDP socket per queue (one SO_REUSEPORT group on the port, steered by
   * inner flow, so each flow is received by one worker and stays in order);
   * on failure nothing stays open.
   */
  private async openDevices(): Promise<void> {
    const addon = this.addon!;
    let n = this.workerCount;
    if (n > 1 && typeof addon.udpSteerByInnerFlow !== 'function') {
      this.log.warn('this native addon cannot steer UDP sockets by flow; running one worker pair (rebuild it: npm ci)', { workers: n });
      n = 1;
    }
    try {
      if (n > 1) {
        // A SO_REUSEPORT group would silently take in another flanneld's sockets on the same port (same
        // user), and a multi-queue flannel0 its queues: bind once without SO_REUSEPORT first, before
        // touching flannel0, so a port in use fails with EADDRINUSE as with one worker pair; our group
        // then refuses every later plain bind (a second flanneld's probe) the same way.
        addon.close(openUdpSocket(addon, this.ctx.extIface.ifaceAddr, this.config.port, false));
      }
      const wantOffload = (this.opts.offload ?? this.ctx.dataplane.offload) && this.opts.dataplane !== false;
      // With IPv6 pods: IPv6 TSO instead of USO (UDP super-packets are cut for IPv4 only).
      const first = openTun(addon, this.tunName, { offload: wantOffload, uso: this.ctx.dataplane.uso !== false && !this.pods.ipv6, tso6: this.pods.ipv6, multiQueue: n > 1 }, this.log);
      this.offload = first.offload;
      this.uso = first.uso;
      this.queues = [{ tunFd: first.fd, udpFd: -1 }];
      for (let q = 1; q < n; q++) {
        this.queues.push({ tunFd: openTunQueue(addon, first).fd, udpFd: -1 });
      }
      if (n > 1) this.steerTunQueues(addon, first.fd);
      await this.configureTun();
      // Bound to the external interface's address, as flannel does: replies then leave from
      // the PublicIP peers know us by, even when it is a secondary address of the link. A
      // socket for both families can only bind to every address.
      const mode = this.endpointMode;
      const any = this.opts.bindAny === true;
      const bindAddr = mode === 'dual' ? '::' : mode === 'ipv6' ? (any ? '::' : this.ctx.extIface.ifaceAddr6!) : any ? '0.0.0.0' : this.ctx.extIface.ifaceAddr;
      for (const q of this.queues) q.udpFd = openUdpSocket(addon, bindAddr, this.config.port, n > 1, mode === 'dual');
      if (n > 1) addon.udpSteerByInnerFlow!(this.queues[0]!.udpFd, n);
      this.udpGro = false;
      if (this.rxCoalesce && this.opts.dataplane !== false) {
        this.udpGro = this.queues.every((q) => enableUdpGro(addon, q.udpFd));
        if (!this.udpGro) this.log.info('UDP GRO unavailable on the socket; datagrams are received one by one', { port: this.config.port });
      }
    } catch (err) {
      this.closeFds();
      throw err;
    }
  }

  /**
   * Pin each flow to one flannel0 queue (one tx worker) from its first
   * packet. Without the program the kernel's learned choice can move a flow
   * once the reverse flow is written from another queue, and packets still
   * queued on the old queue may then leave after newer ones: a warning,
   * not a failure, as traffic still flows.
   */
  private steerTunQueues(addon: NativeAddon, fd: number): void {
    try {
      if (typeof addon.tunSteerByInnerFlow !== 'function') throw new Error('this native addon has no tunSteerByInnerFlow (rebuild it: npm ci)');
      addon.tunSteerByInnerFlow(fd);
      this.tunSteered = true;
    } catch (err) {
      this.tunSteered = false;
      this.log.warn("flannel0's queues keep the kernel's own flow choice, which may move a flow once", { error: (err as Error).message });
    }
  }

  /** Whose problem /healthz names: "udp", or under another backend the device (flannel-wg and flannel-wg-v6 each have their own). */
  private get healthKey(): string {
    return this.opts.component ? this.tunName : 'udp';
  }

  /** Whether flannel0's queues are chosen by our steering program (metrics, tests). */
  tunSteered = false;

  /** Receive coalescing (tun/gro.ts) rides on the offload TUN; FLANNEL_UDP_GRO=0 turns it off for comparisons. */
  private get rxCoalesce(): boolean {
    return this.offload && this.ctx.dataplane.rxCoalesce;
  }

  private startWorkers(): void {
    this.workers = new PacketWorkers(
      {
        queues: this.queues,
        routes: this.routesSab,
        ipv4Pods: this.pods.ipv4,
        ...(this.routes6Sab ? { routes6: this.routes6Sab } : {}),
        ...(this.endpoints6 ? { endpoints6: this.endpoints6.sab } : {}),
        counters: this.countersSab,
        slotSize: this.slotSize(),
        batchSize: this.opts.batchSize ?? 64,
        pathMtu: this.mtu(),
        pollMs: this.opts.pollMs ?? 100,
        offload: this.offload,
        rxCoalesce: this.rxCoalesce,
        udpGro: this.udpGro,
        uso: this.uso,
        replyFastPath: this.ctx.dataplane.replyFastPath !== false,
        prime: this.ctx.dataplane.prime !== false,
        nativeHop: this.ctx.dataplane.nativeHop !== false,
        ...(this.opts.encapsulation ? { encapsulation: this.opts.encapsulation } : {}),
      },
      this.log,
      (role, err) => void this.restartDataplane(role, err),
      this.opts.onEncapMessage,
    );
    this.workers.start();
    this.workersStartedAt = Date.now();
  }

  /**
   * A packet worker died on an fd-level error (flannel0 deleted under us,
   * the socket broken): that direction moves nothing until it is restarted.
   * Report it to /healthz, then reopen both devices and restart both
   * workers, with a backoff that grows while restarts keep failing or the
   * new workers keep dying soon after starting.
   */
  private async restartDataplane(role: string, err: Error): Promise<void> {
    if (this.restarting || this.stopped) return;
    this.restarting = true;
    const problem = `${role} packet worker failed (${err.message}); restarting`;
    this.ctx.health.report(this.healthKey, problem);
    // Died soon after the last restart: wait longer this time; ran a while: start from the shortest wait.
    this.restartDelayMs = Date.now() - this.workersStartedAt > RESTART_STABLE_MS ? RESTART_MIN_MS : Math.min(this.restartDelayMs * 2, RESTART_MAX_MS);
    try {
      const w = this.workers;
      this.workers = null;
      await w?.stop();
      for (;;) {
        await sleep(this.restartDelayMs);
        if (this.stopped) return;
        try {
          this.closeFds();
          await this.openDevices();
          // New workers start with fresh per-worker state (WireGuard: empty replay windows).
          this.opts.onRestart?.();
          this.startWorkers();
          break;
        } catch (e) {
          this.log.warn('cannot restart the udp dataplane yet', { error: (e as Error).message, retryInMs: this.restartDelayMs });
          this.ctx.health.report(this.healthKey, `${problem}: ${(e as Error).message}`);
          this.restartDelayMs = Math.min(this.restartDelayMs * 2, RESTART_MAX_MS);
        }
      }
      counterRegion(this.countersSab, REGION_MAIN)[UdpCounter.dataplaneRestarts] += 1;
      this.ctx.health.report(this.healthKey, null);
      this.log.info('udp dataplane restarted', { device: this.tunName, offload: this.offload });
    } finally {
      this.restarting = false;
    }
  }

  /**
   * flannel0 gets our subnet's network address as a /32 and a route for the
   * whole Network; a device with IPv6 pods (flannel-wg-v6) our IPv6
   * subnet's as a /128 and a route for the IPv6Network, as flannel's kernel
   * devices get them. Addresses left from an earlier lease (the subnet
   * changed) are removed so the kernel never answers for a subnet we no
   * longer own.
   */
  private async configureTun(): Promise<void> {
    const dev = this.tunName;
    // Every address on the device is ours: any other than the wanted one is from an earlier lease.
    if (this.ownSubnet) await ensureOnlyAddress(this.ip, this.ip, dev, `${formatIP4(this.ownSubnet.ip)}/32`, () => true, this.log);
    if (this.ownSubnet6) await ensureOnlyAddress(this.ip, this.ip, dev, `${formatIP6(this.ownSubnet6.ip)}/128`, () => true, this.log, 6);
    await this.ip.run(['link', 'set', 'dev', dev, 'mtu', String(this.mtu()), 'txqueuelen', String(this.opts.txQueueLen ?? 2000), 'up']);
    if (this.ownSubnet) await this.ip.run(['route', 'replace', formatIP4Net(this.ctx.config.network!), 'dev', dev]);
    if (this.ownSubnet6) await this.ip.run(['-6', 'route', 'replace', formatIP6Net(this.ctx.config.ipv6Network!), 'dev', dev]);
    if (this.offload) {
      // Super-packets must fit one segment batch whatever the MSS (see MAX_SEGMENTS).
      await this.ip.run(['link', 'set', 'dev', dev, 'gso_max_segs', String(MAX_SEGMENTS)]).catch((err: Error) => {
        this.log.warn('cannot cap gso_max_segs on the TUN device; TCP with a very small MSS may stall', { device: dev, error: err.message });
      });
    }
  }

  /**
   * The u32 the packet path names an endpoint (address text) by: the IPv4
   * address itself, or its id in the endpoint table. Throws on text that is
   * no address of this socket's kind, and EndpointIdsExhausted.
   */
  endpointId(text: string): number {
    return this.endpoints6 ? this.endpoints6.idOfText(text) : parseIP4(text);
  }

  /** The peer id a lease's subnets are routed to: the encapsulation's (peerIdOf), else its endpoint's id; null when it has none. */
  private peerOf(lease: Lease): number | null {
    if (this.opts.peerIdOf) return this.opts.peerIdOf(lease);
    const text = this.endpointMode === 'ipv4' ? lease.attrs.publicIP : lease.attrs.publicIPv6;
    if (!text) return null;
    try {
      return this.endpointId(text);
    } catch (err) {
      if (err instanceof EndpointIdsExhausted) this.log.error('cannot route the lease', { subnet: describeLease(lease), error: err.message });
      return null;
    }
  }

  async handleEvents(events: LeaseEvent[]): Promise<void> {
    let changed = false;
    for (const ev of events) {
      const sn = this.pods.ipv4 ? ev.lease.subnet : null;
      const sn6 = this.pods.ipv6 ? ev.lease.ipv6Subnet : null;
      // Our own lease (either of its subnets; a null pair compares equal, hence the guards).
      if ((sn && ip4NetEqual(sn, this.ownSubnet)) || (sn6 && ip6NetEqual(sn6, this.ownSubnet6))) continue;
      const key = sn ? formatIP4Net(sn) : null;
      const key6 = sn6 ? formatIP6Net(sn6) : null;
      if (!key && !key6) continue;
      if (ev.type === 'removed') {
        for (const [k, m] of [[key, this.peers], [key6, this.peers6]] as const) {
          if (k && m.delete(k)) {
            changed = true;
            this.log.debug('route removed', { subnet: k });
          }
        }
        continue;
      }
      const peer = this.peerOf(ev.lease);
      if (peer === null) {
        this.log.warn(`ignoring lease without a usable ${this.endpointMode === 'ipv6' ? 'PublicIPv6' : this.endpointMode === 'dual' ? 'endpoint' : 'IPv4 PublicIP'}`, {
          subnet: describeLease(ev.lease),
          publicIP: ev.lease.attrs.publicIP,
          ...(this.endpointMode !== 'ipv4' ? { publicIPv6: ev.lease.attrs.publicIPv6 } : {}),
        });
        continue;
      }
      if (key) {
        const prev = this.peers.get(key);
        if (!prev || prev.peer !== peer) {
          this.peers.set(key, { net: sn!.ip, prefixLen: sn!.prefixLen, peer, port: this.config.port });
          changed = true;
          this.log.debug(prev ? 'route changed' : 'route added', { subnet: key, publicIP: ev.lease.attrs.publicIP });
        }
      }
      if (key6) {
        const prev = this.peers6.get(key6);
        if (!prev || prev.peer !== peer) {
          this.peers6.set(key6, { words: words6(sn6!.ip), prefixLen: sn6!.prefixLen, peer, port: this.config.port });
          changed = true;
          this.log.debug(prev ? 'route changed' : 'route added', { subnet: key6, publicIPv6: ev.lease.attrs.publicIPv6 });
        }
      }
    }
    if (changed) this.schedulePublish();
  }

  /**
   * Publish at once when the last publish is older than PUBLISH_INTERVAL_MS,
   * else once at the end of that interval: one change reaches the workers
   * immediately, while a burst of thousands of lease events costs one
   * publish per interval instead of one per event (each publish is
   * O(routes) here and in every worker, which rebuilds its index).
   */
  private schedulePublish(): void {
    if (this.publishTimer) return;
    const wait = this.lastPublish + PUBLISH_INTERVAL_MS - Date.now();
    if (wait <= 0) return this.publish();
    this.publishTimer = setTimeout(() => {
      this.publishTimer = null;
      this.publish();
    }, wait);
  }

  private publish(): void {
    this.lastPublish = Date.now();
    if (this.routes6) {
      const own6 = this.ownSubnet6;
      this.routes6.publish({ own: own6 ? { words: words6(own6.ip), prefixLen: own6.prefixLen } : { words: [0, 0, 0, 0], prefixLen: 128 }, routes: [...this.peers6.values()] });
    }
    // Routes name endpoints only when the encapsulation does not name peers itself.
    if (!this.opts.peerIdOf) this.endpoints6?.hold('routes', [...[...this.peers.values()].map((r) => r.peer), ...[...this.peers6.values()].map((r) => r.peer)]);
    const own = this.ownSubnet;
    const network = this.ctx.config.network ?? { ip: 0, prefixLen: 32 };
    this.routes.publish({
      ownNet: own ? own.ip : 0,
      ownPrefixLen: own ? own.prefixLen : 32,
      network: network.ip,
      networkPrefixLen: network.prefixLen,
      // The Network's own address: inside the Network (so reverse-path checks
      // on flannel0 pass), never a host's, and not local (the kernel drops
      // packets arriving with one of its own addresses as source).
      icmpSource: network.ip,
      routes: [...this.peers.values()],
    });
  }

  /** Current routes, for diagnostics and tests. */
  routeList(): { subnet: string; publicIP: string; port: number }[] {
    const name = this.opts.describePeer ?? ((peer: number) => (this.endpoints6 ? this.endpoints6.text(peer) : formatIP4(peer)));
    return [...this.peers.entries(), ...this.peers6.entries()].map(([subnet, r]) => ({ subnet, publicIP: name(r.peer), port: r.port }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.publishTimer) clearTimeout(this.publishTimer);
    this.publishTimer = null;
    const w = this.workers;
    this.workers = null;
    if (w) await w.stop();
    this.closeFds();
    await this.deviceHold?.release();
    this.deviceHold = null;
  }

  private closeFds(): void {
    for (const q of this.queues) {
      for (const fd of [q.tunFd, q.udpFd]) {
        if (fd < 0) continue;
        try {
          this.addon?.close(fd);
        } catch (err) {
          this.log.warn('closing fd failed', { fd, error: err });
        }
      }
    }
    this.queues = [];
  }
}
