/**
 * flannel's wireguard backend: device flannel-wg with our subnet's address
 * and a route for the Network, one WireGuard peer per remote lease (its
 * PublicKey from BackendData, endpoint PublicIP:ListenPort, allowed IPs its
 * subnet), the private key kept in /run/flannel/wgkey (WIREGUARD_KEY_FILE)
 * and published as {"PublicKey":"..."}. With the kernel's WireGuard the
 * link is the kernel's (kernel.ts); without it (or FLANNEL_WIREGUARD_IMPL=
 * userspace) our own WireGuard carries the traffic (userspace.ts), speaking
 * the same protocol, so both kinds of host, and flannel's own, interoperate.
 */
import type { Backend, BackendContext, BackendFactory, BackendLeaseAttrs } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { IpRoute } from '../../net/iproute.js';
import { publicKeyOf } from '../../wireguard/primitives.js';
import { describe } from '../../subnet/manager.js';
import { loadOrCreatePrivateKey } from './key-file.js';
import { KernelWireGuard, kernelHasWireGuard } from './kernel.js';
import { UserspaceWireGuard } from './userspace.js';
import { parseWireGuardOptions, wireGuardHostSettings, WIREGUARD_OVERHEAD, type WireGuardHostSettings, type WireGuardImpl, type WireGuardOptions } from './options.js';
import { peerOf, peerSet, type WgPeerSpec } from './peers.js';
import type { UdpBackendOptions } from '../udp/backend.js';

interface WireGuardLink {
  start(own: Lease): Promise<void>;
  handleRouteEvents(events: LeaseEvent[]): Promise<void>;
  setPeers(peers: WgPeerSpec[]): Promise<void>;
  stop(): Promise<void>;
}

export interface WireGuardBackendOptions {
  /** Runners for the kernel path (plan-mode in tests). */
  ip?: IpRoute;
  wg?: IpRoute;
  /** Userspace dataplane tuning (tests). */
  udp?: UdpBackendOptions;
}

export class WireGuardBackend implements Backend {
  readonly type = 'wireguard';
  private readonly log;
  private privateKey: Buffer | null = null;
  private link: WireGuardLink | null = null;
  private readonly peers = new Map<string, WgPeerSpec>();
  private readonly skipped = new Set<string>();
  impl: WireGuardImpl = 'userspace';

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: WireGuardOptions,
    private readonly host: WireGuardHostSettings,
    private readonly tuning: WireGuardBackendOptions = {},
  ) {
    if (!ctx.config.network) throw new Error('wireguard backend: IPv6-only networks are not supported here yet (EnableIPv4 is off)');
    if (options.mode === 'ipv6') throw new Error('wireguard backend: Mode "ipv6" (IPv6 endpoints) is not supported here yet; use separate, auto or ipv4');
    this.log = ctx.log;
  }

  /** Load or create the key and decide kernel or userspace: the lease must carry the public key. */
  async prepare(): Promise<BackendLeaseAttrs> {
    const { key, created } = await loadOrCreatePrivateKey(this.host.keyFile);
    this.privateKey = key;
    const publicKey = publicKeyOf(key).toString('base64');
    this.log.info(created ? 'created a WireGuard key' : 'using the WireGuard key', { file: this.host.keyFile, public: publicKey });
    const ip = this.tuning.ip ?? new IpRoute();
    this.impl = this.host.impl === 'auto' ? ((await kernelHasWireGuard(ip)) ? 'kernel' : 'userspace') : this.host.impl;
    if (this.host.impl === 'auto' && this.impl === 'userspace') this.log.info('the kernel has no WireGuard: using the userspace WireGuard dataplane');
    this.link =
      this.impl === 'kernel'
        ? new KernelWireGuard(ip, this.tuning.wg ?? new IpRoute({ binary: 'wg' }), this.ctx.config.network!, this.mtu(), key, this.options, this.host.keyFile, this.log)
        : new UserspaceWireGuard(this.ctx, this.options, key, this.host.socketDir, this.tuning.udp);
    return { backendType: 'wireguard', backendData: { PublicKey: publicKey } };
  }

  mtu(): number {
    return this.ctx.extIface.mtu - WIREGUARD_OVERHEAD;
  }

  async start(ownLease: Lease): Promise<void> {
    if (!this.link) throw new Error('wireguard backend: prepare() first');
    this.ownSubnetKey = ownLease.key;
    await this.link.start(ownLease);
    this.log.info('wireguard device up', { device: 'flannel-wg', impl: this.impl, listenPort: this.options.listenPort, mtu: this.mtu() });
  }

  private ownSubnetKey = '';

  async handleEvents(events: LeaseEvent[]): Promise<void> {
    const routeEvents: LeaseEvent[] = [];
    let changed = false;
    for (const ev of events) {
      const key = ev.lease.key;
      if (key === this.ownSubnetKey) continue;
      const verdict = ev.type === 'removed' ? null : peerOf(ev.lease, this.options.listenPort);
      if (verdict && 'peer' in verdict) {
        const prev = this.peers.get(key);
        this.skipped.delete(key);
        if (!prev || !prev.publicKey.equals(verdict.peer.publicKey) || prev.endpointIP !== verdict.peer.endpointIP || prev.subnet !== verdict.peer.subnet) {
          this.peers.set(key, verdict.peer);
          changed = true;
          this.log.info(prev ? 'wireguard peer changed' : 'wireguard peer added', { subnet: describe(ev.lease), endpoint: `${verdict.peer.endpointIP}:${verdict.peer.port}`, public: verdict.peer.publicKeyText });
        }
        routeEvents.push(ev);
        continue;
      }
      if (verdict && !this.skipped.has(key)) {
        this.skipped.add(key);
        this.log.warn('lease is not a usable wireguard peer', { subnet: describe(ev.lease), why: verdict.skip });
      }
      if (this.peers.delete(key)) {
        changed = true;
        this.log.info('wireguard peer removed', { subnet: describe(ev.lease) });
      }
      routeEvents.push({ type: 'removed', lease: ev.lease });
    }
    await this.link?.handleRouteEvents(routeEvents);
    if (changed) await this.link?.setPeers(peerSet(this.peers));
  }

  async stop(): Promise<void> {
    await this.link?.stop();
  }

  /** The userspace dataplane, when that is the path (tests, diagnostics). */
  get userspace(): UserspaceWireGuard | null {
    return this.link instanceof UserspaceWireGuard ? this.link : null;
  }
}

export const createWireGuardBackend: BackendFactory = async (ctx: BackendContext) => new WireGuardBackend(ctx, parseWireGuardOptions(ctx.backendConfig), wireGuardHostSettings());
