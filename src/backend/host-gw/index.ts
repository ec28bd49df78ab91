/**
 * flannel's host-gw backend: no encapsulation, one route per remote lease,
 * `subnet via PublicIP dev <iface>`. It only works between hosts on one
 * link; a peer elsewhere gets one log line saying so, and no route.
 */
import type { Backend, BackendContext, BackendFactory } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4Net, type IP4Net } from '../../net/ipaddr.js';
import { IpRoute } from '../../net/iproute.js';
import { linkPrefixes, onLink } from '../../net/link-prefixes.js';
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
  private ownSubnet: IP4Net | null = null;
  private readonly offLink = new Set<string>();
  private readonly transcript: string[];

  constructor(
    private readonly ctx: BackendContext,
    opts: HostGwBackendOptions = {},
  ) {
    if (!ctx.config.network) throw new Error('host-gw backend: IPv6-only networks are not supported here yet (EnableIPv4 is off)');
    const runners = kernelRunners(ctx.dryRun, opts);
    this.transcript = runners.transcript;
    const ip = runners.ip;
    this.readIp = runners.readIp;
    this.log = ctx.log.child('host-gw');
    this.routing = new KernelRouting({
      backendType: 'host-gw',
      scope: { network: ctx.config.network, routeDevs: [ctx.extIface.name], ownedDevs: [] },
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
    this.prefixes = await linkPrefixes(this.readIp, this.ctx.extIface.name);
    this.routing.start();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.routing.handleEvents(events);
  }

  private peerState(l: Lease): PeerState | null {
    if (!l.subnet || (this.ownSubnet && l.subnet.ip === this.ownSubnet.ip)) return null;
    if (!onLink(this.prefixes, l.attrs.publicIP)) {
      if (!this.offLink.has(l.key)) {
        this.offLink.add(l.key);
        this.log.warn('peer is not on our link: host-gw cannot reach it, no route', { subnet: formatIP4Net(l.subnet), publicIP: l.attrs.publicIP, iface: this.ctx.extIface.name });
      }
      return null;
    }
    this.offLink.delete(l.key);
    return { routes: [{ dst: formatIP4Net(l.subnet), via: l.attrs.publicIP, dev: this.ctx.extIface.name }] };
  }

  plannedCommands(): string[] {
    return this.transcript;
  }

  async stop(): Promise<void> {
    this.routing.stop();
  }
}

export const createHostGwBackend: BackendFactory = async (ctx: BackendContext) => new HostGwBackend(ctx);
