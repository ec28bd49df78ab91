/**
 * flannel's ipip backend: an IP-in-IP tunnel device flannel.ipip (local =
 * our interface address, MTU link - 20) and one route per remote lease,
 * `subnet via PublicIP dev flannel.ipip onlink`; with DirectRouting a peer
 * on our link gets a plain route via its PublicIP instead.
 *
 * A kernel without ipip cannot run this backend: the device cannot be
 * created, and the daemon says so and exits 1 before it has changed
 * anything (no lease, no route). Its commands are checked as a plan (the
 * applier's dry run) where the kernel lacks the module.
 */
import type { Backend, BackendContext, BackendFactory, BackendLeaseAttrs } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4, formatIP4Net, type IP4Net } from '../../net/ipaddr.js';
import { IpCommandError, IpRoute } from '../../net/iproute.js';
import { linkPrefixes, onLink } from '../../net/link-prefixes.js';
import { boolOption } from '../option-readers.js';
import { KernelRouting, kernelRunners, type PeerState } from '../kernel-routing.js';
import { BackendUnavailableError } from '../errors.js';

export const IPIP_DEVICE = 'flannel.ipip';
/** The outer IPv4 header. */
const IPIP_OVERHEAD = 20;

export interface IpipBackendOptions {
  ip?: IpRoute;
  readIp?: IpRoute;
  recheckMs?: number;
}

export class IpipBackend implements Backend {
  readonly type = 'ipip';
  readonly directRouting: boolean;
  private readonly ip: IpRoute;
  private readonly readIp: IpRoute;
  private readonly routing: KernelRouting;
  private readonly log;
  private prefixes: IP4Net[] = [];
  private ownSubnet: IP4Net | null = null;
  private readonly transcript: string[];

  constructor(
    private readonly ctx: BackendContext,
    opts: IpipBackendOptions = {},
  ) {
    this.directRouting = boolOption('ipip', ctx.backendConfig, 'DirectRouting');
    if (!ctx.config.enableIPv4 || !ctx.config.network) {
      throw new Error('ipip backend: an IPv6-only network (EnableIPv4 false) cannot run on ipip, which tunnels IPv4 only, as flannel\'s; use vxlan or host-gw, or set EnableIPv4 and Network');
    }
    const runners = kernelRunners(ctx.dryRun, opts);
    this.transcript = runners.transcript;
    this.ip = runners.ip;
    this.readIp = runners.readIp;
    this.log = ctx.log.child('ipip');
    // flannel's ipip publishes PublicIPv6 but routes no IPv6 subnet; say so rather than leave pods wondering.
    if (ctx.config.enableIPv6) this.log.warn('ipip carries IPv4 only: IPv6 subnets get no routes on this backend (use vxlan or host-gw for dual stack)');
    this.routing = new KernelRouting({
      backendType: 'ipip',
      scope: { network: ctx.config.network, routeDevs: [IPIP_DEVICE, ctx.extIface.name], ownedDevs: [] },
      peerState: (l) => this.peerState(l),
      log: this.log,
      ip: this.ip,
      readIp: this.readIp,
      recheckMs: opts.recheckMs,
    });
  }

  async prepare(): Promise<BackendLeaseAttrs> {
    const local = this.ctx.extIface.ifaceAddr;
    const shown = JSON.parse((await this.readIp.runIgnoringMissing(['-d', '-json', 'link', 'show', 'dev', IPIP_DEVICE])) || '[]') as { linkinfo?: { info_kind?: string; info_data?: { local?: string; remote?: string } } }[];
    const cur = shown[0];
    const fits = cur?.linkinfo?.info_kind === 'ipip' && cur.linkinfo.info_data?.local === local && (cur.linkinfo.info_data.remote ?? 'any') === 'any';
    if (cur && !fits) {
      this.log.warn('ipip device exists with other parameters, recreating it', { device: IPIP_DEVICE });
      await this.ip.run(['link', 'del', IPIP_DEVICE]);
    }
    if (!fits) {
      try {
        await this.ip.run(['link', 'add', IPIP_DEVICE, 'type', 'ipip', 'local', local]);
      } catch (err) {
        if (err instanceof IpCommandError && /Unknown device type|not supported|No such device|Operation not supported/i.test(err.stderr)) {
          throw new BackendUnavailableError(`ipip backend: this kernel has no IP-in-IP tunnels (${err.stderr.trim()}); load the ipip module (modprobe ipip) or choose another backend (vxlan, host-gw)`);
        }
        throw err;
      }
    }
    this.prefixes = this.directRouting ? await linkPrefixes(this.readIp, this.ctx.extIface.name) : [];
    return { backendType: 'ipip' };
  }

  mtu(): number {
    return this.ctx.extIface.mtu - IPIP_OVERHEAD;
  }

  async start(ownLease: Lease): Promise<void> {
    if (!ownLease.subnet) throw new Error('ipip backend needs an IPv4 lease');
    this.ownSubnet = ownLease.subnet;
    await this.ip.runIgnoringMissing(['addr', 'flush', 'dev', IPIP_DEVICE]);
    await this.ip.run(['addr', 'add', `${formatIP4(ownLease.subnet.ip)}/32`, 'dev', IPIP_DEVICE]);
    await this.ip.run(['link', 'set', 'dev', IPIP_DEVICE, 'mtu', String(this.mtu()), 'up']);
    this.routing.start();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.routing.handleEvents(events);
  }

  private peerState(l: Lease): PeerState | null {
    if (!l.subnet || (this.ownSubnet && l.subnet.ip === this.ownSubnet.ip)) return null;
    const dst = formatIP4Net(l.subnet);
    if (this.directRouting && onLink(this.prefixes, l.attrs.publicIP)) return { routes: [{ dst, via: l.attrs.publicIP, dev: this.ctx.extIface.name }] };
    return { routes: [{ dst, via: l.attrs.publicIP, dev: IPIP_DEVICE, onlink: true }] };
  }

  plannedCommands(): string[] {
    return this.transcript;
  }

  async stop(): Promise<void> {
    this.routing.stop();
  }
}

export const createIpipBackend: BackendFactory = async (ctx) => new IpipBackend(ctx);
