/**
 * flannel's host-gw backend: no encapsulation, one route per remote lease,
 * `subnet via PublicIP dev <iface>`. It only works between hosts on one
 * link; a peer elsewhere gets one log line saying so, and no route.
 */
import type { Backend, BackendContext, BackendFactory } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4Net, formatIP6Net, ip6NetEqual, type IP4Net, type IP6Net } from '../../net/ipaddr.js';
import { IpRoute } from '../../net/iproute.js';
import { linkPrefixes, linkPrefixes6, onLink, onLink6 } from '../../net/link-prefixes.js';
import { KernelRouting, kernelRunners, type PeerState } from '../kernel-routing.js';

export interface HostGwBackendOptions {
  ip?: IpRoute;
  readIp?: IpRoute;
  recheckMs?: number;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw';
  private readonly routing: KernelRouting;
  private readonly readIp: IpRoute;
  private readonly log;
  private prefixes: IP4Net[] = [];
  private prefixes6: IP6Net[] = [];
  private ownSubnet: IP4Net | null = null;
  private ownSubnet6: IP6Net | null = null;
  private readonly offLink = new Set<string>();
  private readonly transcript: string[];

  constructor(
    private readonly ctx: BackendContext,
    opts: HostGwBackendOptions = {},
  ) {
    const runners = kernelRunners(ctx.dryRun, opts);
    this.transcript = runners.transcript;
    const ip = runners.ip;
    this.readIp = runners.readIp;
    this.log = ctx.log.child('host-gw');
    this.routing = new KernelRouting({
      backendType: 'host-gw',
      // Dual stack: IPv6 routes via each peer's PublicIPv6, owned inside IPv6Network.
      scope: { ...(ctx.config.enableIPv4 && ctx.config.network ? { network: ctx.config.network } : {}), ...(ctx.config.enableIPv6 && ctx.config.ipv6Network ? { network6: ctx.config.ipv6Network } : {}), routeDevs: [ctx.extIface.name], ownedDevs: [] },
      peerState: (l) => this.peerState(l),
      log: this.log,
      ip,
      readIp: this.readIp,
      recheckMs: opts.recheckMs,
    });
  }

  async prepare() {
    return { backendType: 'host-gw' };
  }

  mtu(): number {
    return this.ctx.extIface.mtu;
  }

  async start(ownLease: Lease): Promise<void> {
    this.ownSubnet = ownLease.subnet;
    this.ownSubnet6 = ownLease.ipv6Subnet;
    if (this.ctx.config.enableIPv4) this.prefixes = await linkPrefixes(this.readIp, this.ctx.extIface.name);
    if (this.ctx.config.enableIPv6) this.prefixes6 = await linkPrefixes6(this.readIp, this.ctx.extIface.name);
    this.routing.start();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.routing.handleEvents(events);
  }

  private peerState(l: Lease): PeerState | null {
    const routes: PeerState['routes'] = [];
    const sn = l.subnet;
    if (this.ctx.config.enableIPv4 && sn && !(this.ownSubnet && sn.ip === this.ownSubnet.ip)) {
      if (onLink(this.prefixes, l.attrs.publicIP)) routes.push(this.onLinkRoute(l, formatIP4Net(sn), l.attrs.publicIP));
      else this.noteOffLink(l, formatIP4Net(sn), l.attrs.publicIP);
    }
    // The IPv6 half, as flannel's host-gw: the peer's IPv6 subnet via its PublicIPv6.
    const sn6 = l.ipv6Subnet;
    const ip6 = l.attrs.publicIPv6;
    if (this.ctx.config.enableIPv6 && sn6 && ip6 && !ip6NetEqual(sn6, this.ownSubnet6)) {
      if (onLink6(this.prefixes6, ip6)) routes.push(this.onLinkRoute(l, formatIP6Net(sn6), ip6));
      else this.noteOffLink(l, formatIP6Net(sn6), ip6);
    }
    return routes.length === 0 ? null : { routes };
  }

  private onLinkRoute(l: Lease, dst: string, via: string): PeerState['routes'][number] {
    this.offLink.delete(`${l.key} ${dst}`);
    return { dst, via, dev: this.ctx.extIface.name };
  }

  private noteOffLink(l: Lease, subnet: string, publicIP: string): void {
    const tag = `${l.key} ${subnet}`;
    if (this.offLink.has(tag)) return;
    this.offLink.add(tag);
    this.log.warn('peer is not on our link: host-gw cannot reach it, no route', { subnet, publicIP, iface: this.ctx.extIface.name });
  }

  plannedCommands(): string[] {
    return this.transcript;
  }

  async stop(): Promise<void> {
    this.routing.stop();
  }
}

export const createHostGwBackend: BackendFactory = async (ctx: BackendContext) => new HostGwBackend(ctx);
