/**
 * flannel's wireguard backend: device flannel-wg (and flannel-wg-v6 in Mode
 * separate with IPv6, peers.ts) with our subnet's address and a route for
 * the Network, one WireGuard peer per remote lease (its PublicKey from
 * BackendData or BackendV6Data, endpoint PublicIP or PublicIPv6 and the
 * device's port, allowed IPs its subnets), the private key kept in
 * /run/flannel/wgkey (WIREGUARD_KEY_FILE) and published as
 * {"PublicKey":"..."} for each enabled family. With the kernel's WireGuard the
 * link is the kernel's (kernel.ts); without it (or FLANNEL_WIREGUARD_IMPL=
 * userspace) our own WireGuard carries the traffic (userspace.ts), speaking
 * the same protocol, so both kinds of host, and flannel's own, interoperate.
 */
import type { Backend, BackendContext, BackendFactory, BackendLeaseAttrs } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { IpRoute } from '../../net/iproute.js';
import { kernelRunners } from '../kernel-routing.js';
import { publicKeyOf } from '../../wireguard/primitives.js';
import { describe } from '../../subnet/manager.js';
import { loadOrCreatePrivateKey } from './key-file.js';
import { holdPath, type Hold } from '../../native/exclusive-lock.js';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { KernelWireGuard, kernelHasWireGuard } from './kernel.js';
import { UserspaceWireGuard, UserspaceWireGuardSet } from './userspace.js';
import { parseWireGuardOptions, wireGuardHostSettings, WIREGUARD_OVERHEAD, type WireGuardHostSettings, type WireGuardImpl, type WireGuardOptions } from './options.js';
import { endpointText, peerOf, peerSet, samePeer, wgDevices, type WgDeviceSpec, type WgPeerSpec } from './peers.js';
import type { UdpBackendOptions } from '../udp/backend.js';

interface WireGuardLink {
  start(own: Lease): Promise<void>;
  /** The leases that are `device`'s peers (others as removals): the userspace route tables. */
  handleRouteEvents(device: string, events: LeaseEvent[]): Promise<void>;
  setPeers(device: string, peers: WgPeerSpec[]): Promise<void>;
  stop(): Promise<void>;
}

export interface WireGuardBackendOptions {
  /** Runners for the kernel path (plan-mode in tests; readIp defaults to ip). */
  ip?: IpRoute;
  wg?: IpRoute;
  readIp?: IpRoute;
  /** Userspace dataplane tuning (tests). */
  udp?: UdpBackendOptions;
}

export class WireGuardBackend implements Backend {
  readonly type = 'wireguard';
  private readonly log;
  private privateKey: Buffer | null = null;
  private link: WireGuardLink | null = null;
  /** The devices the Mode calls for, and per device its peers by lease key. */
  readonly devices: WgDeviceSpec[];
  private readonly peers = new Map<string, Map<string, WgPeerSpec>>();
  private readonly skipped = new Set<string>();
  impl: WireGuardImpl = 'userspace';

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: WireGuardOptions,
    private readonly host: WireGuardHostSettings,
    private readonly tuning: WireGuardBackendOptions = {},
  ) {
    this.log = ctx.log;
    const { config } = ctx;
    this.devices = wgDevices(options.mode, config.enableIPv4 && config.network !== null, config.enableIPv6 && config.ipv6Network !== null, options.listenPort, options.listenPortV6);
    for (const d of this.devices) this.peers.set(d.name, new Map());
  }

  /** Load or create the key and decide kernel or userspace: the lease must carry the public key. */
  async prepare(): Promise<BackendLeaseAttrs> {
    const dryRun = this.ctx.dryRun === true;
    if (dryRun && this.host.impl === 'userspace') {
      throw new Error('--dry-run: the userspace WireGuard path keeps its state in flanneld itself, there is no kernel state to plan (FLANNEL_WIREGUARD_IMPL=kernel or auto plans the kernel path)');
    }
    // A dry run records the kernel path's writes and reads the kernel for real (kernel-routing.ts).
    const runners = dryRun ? kernelRunners(true) : null;
    const ip = this.tuning.ip ?? runners?.ip ?? new IpRoute();
    const readIp = this.tuning.readIp ?? runners?.readIp ?? ip;
    const wg = this.tuning.wg ?? new IpRoute({ binary: 'wg', ...(runners ? { mode: 'plan' as const, transcript: runners.transcript } : {}) });
    this.transcript = runners?.transcript ?? [];
    const impl = dryRun ? 'kernel' : this.host.impl === 'auto' ? ((await kernelHasWireGuard(ip)) ? 'kernel' : 'userspace') : this.host.impl;
    this.impl = impl;
    // Held for the daemon's lifetime (a dry run changes nothing and holds nothing).
    if (!dryRun) {
      mkdirSync(dirname(this.host.keyFile), { recursive: true, mode: 0o755 });
      this.keyHold = holdPath(this.host.keyFile, 'the WireGuard key file', 'WIREGUARD_KEY_FILE');
    }
    const { key, created } = await loadOrCreatePrivateKey(this.host.keyFile, dryRun, (msg) => this.log.warn(msg));
    this.privateKey = key;
    const publicKey = publicKeyOf(key).toString('base64');
    if (dryRun && created) this.log.info('dry run: no key file yet, a throw-away key stands in for the one a start would create', { file: this.host.keyFile });
    else this.log.info(created ? 'created a WireGuard key' : 'using the WireGuard key', { file: this.host.keyFile, public: publicKey });
    if (dryRun && this.host.impl === 'auto') this.log.info("dry run: planning the kernel path (what a kernel with WireGuard gets; a start on one without uses the userspace path)");
    if (!dryRun && this.host.impl === 'auto' && impl === 'userspace') this.log.info('the kernel has no WireGuard: using the userspace WireGuard dataplane');
    const { config } = this.ctx;
    this.link =
      impl === 'kernel'
        ? new KernelWireGuard(ip, wg, readIp, this.devices, { network: config.network, ipv6Network: config.ipv6Network }, this.mtu(), key, this.options, this.host.keyFile, this.log, dryRun)
        : new UserspaceWireGuardSet(this.ctx, this.options, key, this.host.socketDir, this.devices, this.tuning.udp);
    // As flannel: one key for every device, published for each enabled family.
    const data = { PublicKey: publicKey };
    return { backendType: 'wireguard', ...(config.enableIPv4 ? { backendData: data } : {}), ...(config.enableIPv6 ? { backendV6Data: data } : {}) };
  }

  private transcript: string[] = [];

  /** --dry-run: the kernel path's commands (ip and wg), in order. */
  plannedCommands(): string[] {
    return this.transcript;
  }

  mtu(): number {
    return this.ctx.extIface.mtu - WIREGUARD_OVERHEAD;
  }

  async start(ownLease: Lease): Promise<void> {
    if (!this.link) throw new Error('wireguard backend: prepare() first');
    this.ownSubnetKey = ownLease.key;
    await this.link.start(ownLease);
    for (const d of this.devices) this.log.info('wireguard device up', { device: d.name, impl: this.impl, listenPort: d.listenPort, mtu: this.mtu() });
  }

  private ownSubnetKey = '';

  async handleEvents(events: LeaseEvent[]): Promise<void> {
    const local = { extAddr: this.ctx.extIface.extAddr, extAddr6: this.ctx.extIface.extAddr6 };
    const changed = new Set<string>();
    // The userspace path's route tables follow the leases that are peers of each device.
    const routeEvents = new Map<string, LeaseEvent[]>(this.devices.map((d) => [d.name, []]));
    for (const ev of events) {
      const key = ev.lease.key;
      if (key === this.ownSubnetKey) continue;
      for (const dev of this.devices) {
        const peers = this.peers.get(dev.name)!;
        const verdict = ev.type === 'removed' ? null : peerOf(ev.lease, dev, local);
        const skipId = `${dev.name} ${key}`;
        if (verdict && 'peer' in verdict) {
          const prev = peers.get(key);
          this.skipped.delete(skipId);
          routeEvents.get(dev.name)!.push(ev);
          if (!prev || !samePeer(prev, verdict.peer)) {
            peers.set(key, verdict.peer);
            changed.add(dev.name);
            this.log.info(prev ? 'wireguard peer changed' : 'wireguard peer added', { device: dev.name, subnet: describe(ev.lease), endpoint: endpointText(verdict.peer), public: verdict.peer.publicKeyText });
          }
          continue;
        }
        if (verdict && !this.skipped.has(skipId)) {
          this.skipped.add(skipId);
          this.log.warn('lease is not a usable wireguard peer', { device: dev.name, subnet: describe(ev.lease), why: verdict.skip });
        }
        routeEvents.get(dev.name)!.push({ type: 'removed', lease: ev.lease });
        if (peers.delete(key)) {
          changed.add(dev.name);
          this.log.info('wireguard peer removed', { device: dev.name, subnet: describe(ev.lease) });
        }
      }
    }
    // Peers first: the userspace route tables name a subnet's peer by its key's slot.
    for (const name of changed) {
      const conflicts: string[] = [];
      await this.link?.setPeers(name, peerSet(this.peers.get(name)!, conflicts));
      for (const key of new Set(conflicts)) this.log.warn('leases with one wireguard key name different endpoints; keeping the first', { device: name, public: key });
    }
    for (const [name, evs] of routeEvents) await this.link?.handleRouteEvents(name, evs);
  }

  private keyHold: Hold | null = null;

  async stop(): Promise<void> {
    await this.link?.stop();
    await this.keyHold?.release();
    this.keyHold = null;
  }

  /** The userspace devices, when that is the path (tests, diagnostics). */
  get userspaceDevices(): UserspaceWireGuard[] {
    return this.link instanceof UserspaceWireGuardSet ? this.link.devices : [];
  }

  /** The first userspace device (flannel-wg, or flannel-wg-v6 on an IPv6-only network). */
  get userspace(): UserspaceWireGuard | null {
    return this.userspaceDevices[0] ?? null;
  }
}

export const createWireGuardBackend: BackendFactory = async (ctx: BackendContext) => new WireGuardBackend(ctx, parseWireGuardOptions(ctx.backendConfig), wireGuardHostSettings());
