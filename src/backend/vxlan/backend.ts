/**
 * flannel's vxlan backend: a kernel VXLAN device flannel.<VNI> (nolearning,
 * local = our interface address) carries the overlay; per remote lease an
 * FDB entry (its VtepMAC -> its PublicIP), a permanent neighbour entry (its
 * subnet's network address -> VtepMAC) and a route `subnet via <network
 * address> dev flannel.<VNI> onlink`. With DirectRouting, a peer on our own
 * link gets a plain route via its PublicIP instead. The lease publishes
 * BackendType "vxlan" and BackendData {"VNI":1,"VtepMAC":"..."} as flannel.
 */
import type { Backend, BackendContext, BackendLeaseAttrs } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4, formatIP4Net, formatIP6, formatIP6Net, ip4NetContains, ip6NetEqual, isIP4, parseIP4, type IP4Net, type IP6Net } from '../../net/ipaddr.js';
import { isCanonicalIP6 } from '../../net/canonical.js';
import { IpRoute } from '../../net/iproute.js';
import { linkPrefixes, onLink } from '../../net/link-prefixes.js';
import { ensureOnlyAddress } from '../../net/device-address.js';
import { goField } from '../../config/go-json.js';
import { KernelRouting, kernelRunners, type PeerState } from '../kernel-routing.js';
import { parseVxlanOptions, VXLAN_OVERHEAD, type VxlanOptions } from './options.js';

export interface VxlanBackendOptions {
  /** Runner of every `ip`/`bridge` write; a plan-mode one records instead (dry run, tests). */
  ip?: IpRoute;
  bridge?: IpRoute;
  readIp?: IpRoute;
  readBridge?: IpRoute;
  recheckMs?: number;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

interface JsonLink {
  ifname: string;
  address?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; port?: number; learning?: boolean; gbp?: boolean; link?: string } };
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly options: VxlanOptions;
  readonly device: string;
  /** flannel-v6.<VNI>: the IPv6 half of a dual-stack network (EnableIPv6), as flannel. */
  readonly device6: string | null;
  private vtepMAC6 = '';
  private ownSubnet6: IP6Net | null = null;
  private readonly ip: IpRoute;
  private readonly readIp: IpRoute;
  private readonly log;
  private vtepMAC = '';
  private ownSubnet: IP4Net | null = null;
  private prefixes: IP4Net[] = [];
  private readonly routing: KernelRouting;
  /** Leases already reported as unusable (logged once each). */
  private readonly unusable = new Set<string>();
  private readonly transcript: string[];

  constructor(
    private readonly ctx: BackendContext,
    opts: VxlanBackendOptions = {},
  ) {
    this.options = parseVxlanOptions(ctx.backendConfig);
    if (!ctx.config.network) throw new Error('vxlan backend: IPv6-only networks are not supported here yet (EnableIPv4 is off)');
    this.device = `flannel.${this.options.vni}`;
    this.device6 = ctx.config.enableIPv6 && ctx.config.ipv6Network ? `flannel-v6.${this.options.vni}` : null;
    const runners = kernelRunners(ctx.dryRun, opts);
    this.transcript = runners.transcript;
    this.ip = runners.ip;
    this.readIp = runners.readIp;
    this.log = ctx.log.child('vxlan');
    this.routing = new KernelRouting({
      backendType: 'vxlan',
      scope: {
        network: ctx.config.network,
        ...(this.device6 ? { network6: ctx.config.ipv6Network! } : {}),
        routeDevs: [this.device, ...(this.device6 ? [this.device6] : []), ctx.extIface.name],
        ownedDevs: [this.device, ...(this.device6 ? [this.device6] : [])],
      },
      peerState: (l) => this.peerState(l),
      log: this.log,
      ip: this.ip,
      bridge: runners.bridge,
      readIp: this.readIp,
      readBridge: opts.readBridge,
      recheckMs: opts.recheckMs,
    });
    const name = 'flannel_vxlan_leases_unusable';
    ctx.metrics.register('vxlan', () => `# HELP ${name} Leases of other hosts skipped because their BackendData or PublicIP cannot be used.\n# TYPE ${name} gauge\n${name} ${this.unusable.size}\n`);
  }

  /** The device must exist before the lease: its MAC is what peers need. A restart keeps the MAC it published. */
  async prepare(previous: Lease | null): Promise<BackendLeaseAttrs> {
    this.vtepMAC = await this.ensureDevice(this.device, this.ctx.extIface.ifaceAddr, previousVtepMAC(previous, this.options.vni));
    this.prefixes = this.options.directRouting ? await linkPrefixes(this.readIp, this.ctx.extIface.name) : [];
    const attrs: BackendLeaseAttrs = { backendType: 'vxlan', backendData: { VNI: this.options.vni, VtepMAC: this.vtepMAC } };
    if (this.device6) {
      // flannel-v6.<VNI>: local = our IPv6 interface address, keeping the VtepMAC of BackendV6Data across restarts.
      const local6 = this.ctx.extIface.ifaceAddr6;
      if (!local6) throw new Error(`vxlan backend: EnableIPv6 is set but ${this.ctx.extIface.name} has no IPv6 address for ${this.device6}`);
      this.vtepMAC6 = await this.ensureDevice(this.device6, local6, previousVtepMAC(previous, this.options.vni, true));
      attrs.backendV6Data = { VNI: this.options.vni, VtepMAC: this.vtepMAC6 };
    }
    return attrs;
  }

  /** The vxlan device `dev` with our options and `local`, recreated when it differs (as flannel); returns its MAC. */
  private async ensureDevice(dev: string, local: string, prevMac: string | null): Promise<string> {
    const existing = await this.readLink(dev);
    const why = existing ? this.incompatible(existing, local) : 'missing';
    if (existing && why) {
      this.log.warn('vxlan device exists with other parameters, recreating it', { device: dev, difference: why });
      await this.ip.run(['link', 'del', dev]);
    }
    if (why) {
      const o = this.options;
      await this.ip.run([
        'link', 'add', dev, ...(prevMac ? ['address', prevMac] : []),
        'type', 'vxlan', 'id', String(o.vni), 'local', local, 'dev', this.ctx.extIface.name,
        'dstport', String(o.port), o.learning ? 'learning' : 'nolearning', ...(o.gbp ? ['gbp'] : []),
      ]);
    }
    const link = this.ip.planning && !existing ? null : await this.readLink(dev);
    return (link?.address ?? prevMac ?? '00:00:00:00:00:00').toLowerCase();
  }

  mtu(): number {
    return this.options.mtu || this.ctx.extIface.mtu - VXLAN_OVERHEAD;
  }

  async start(ownLease: Lease): Promise<void> {
    if (!ownLease.subnet) throw new Error('vxlan backend needs an IPv4 lease');
    this.ownSubnet = ownLease.subnet;
    const dev = this.device;
    // Our subnet's network address as /32, as flannel: a source address for host-to-pod traffic, no broadcast routes.
    const want = `${formatIP4(ownLease.subnet.ip)}/32`;
    const network = this.ctx.config.network!;
    await ensureOnlyAddress(this.readIp, this.ip, dev, want, (cidr) => ip4NetContains(network, parseIP4(cidr.split('/')[0]!)), this.log);
    await this.ip.run(['link', 'set', 'dev', dev, 'mtu', String(this.mtu()), 'up']);
    if (this.device6 && ownLease.ipv6Subnet) {
      this.ownSubnet6 = ownLease.ipv6Subnet;
      const want6 = `${formatIP6(ownLease.ipv6Subnet.ip)}/128`;
      await this.ip.run(['-6', 'addr', 'replace', want6, 'dev', this.device6, 'nodad']);
      // An IPv6 outer header is 20 bytes longer than an IPv4 one.
      await this.ip.run(['link', 'set', 'dev', this.device6, 'mtu', String(this.mtu() - 20), 'up']);
      this.log.info('vxlan IPv6 device ready', { device: this.device6, vtepMAC: this.vtepMAC6, address: want6 });
    }
    this.routing.start();
    this.log.info('vxlan device ready', { device: dev, vni: this.options.vni, vtepMAC: this.vtepMAC, address: want, mtu: this.mtu(), directRouting: this.options.directRouting });
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.routing.handleEvents(events);
  }

  /** What a remote lease needs: its IPv4 half, and with dual stack its IPv6 half; null when neither can be used. */
  private peerState(l: Lease): PeerState | null {
    const v4 = this.peerState4(l);
    const v6 = this.device6 ? this.peerState6(l) : null;
    if (!v6) return v4;
    if (!v4) return v6;
    return { routes: [...v4.routes, ...v6.routes], neighs: [...(v4.neighs ?? []), ...(v6.neighs ?? [])], fdb: [...(v4.fdb ?? []), ...(v6.fdb ?? [])] };
  }

  /** The IPv6 half: FDB VtepMAC -> PublicIPv6, the subnet's address at that MAC, the subnet via it onlink (flannel's). */
  private peerState6(l: Lease): PeerState | null {
    const sn6 = l.ipv6Subnet;
    const ip6 = l.attrs.publicIPv6;
    if (!sn6 || !ip6 || ip6NetEqual(sn6, this.ownSubnet6)) return null;
    const data = l.attrs.backendV6Data;
    const mac = data && typeof data === 'object' ? goField(data as Record<string, unknown>, 'VtepMAC') : undefined;
    if (typeof mac !== 'string' || !MAC_RE.test(mac) || !isCanonicalIP6(ip6)) {
      this.reportUnusable(l, `BackendV6Data has no usable VtepMAC (${JSON.stringify(data)}) or PublicIPv6 ${ip6} is not IPv6`);
      return null;
    }
    const dev = this.device6!;
    const gw = formatIP6(sn6.ip);
    return {
      fdb: [{ dev, mac: mac.toLowerCase(), dst: ip6 }],
      neighs: [{ dev, ip: gw, mac: mac.toLowerCase() }],
      routes: [{ dst: formatIP6Net(sn6), via: gw, dev, onlink: true }],
    };
  }

  /** The IPv4 half; null (logged once) when its BackendData cannot be used. */
  private peerState4(l: Lease): PeerState | null {
    const sn = l.subnet;
    if (!sn || (this.ownSubnet && sn.ip === this.ownSubnet.ip)) return null;
    const dst = formatIP4Net(sn);
    if (this.options.directRouting && onLink(this.prefixes, l.attrs.publicIP)) {
      return { routes: [{ dst, via: l.attrs.publicIP, dev: this.ctx.extIface.name }] };
    }
    const data = l.attrs.backendData;
    const mac = data && typeof data === 'object' ? goField(data as Record<string, unknown>, 'VtepMAC') : undefined;
    if (typeof mac !== 'string' || !MAC_RE.test(mac)) {
      this.reportUnusable(l, `BackendData has no usable VtepMAC (${JSON.stringify(data)})`);
      return null;
    }
    if (!isIP4(l.attrs.publicIP)) {
      this.reportUnusable(l, `PublicIP ${l.attrs.publicIP} is not IPv4`);
      return null;
    }
    this.unusable.delete(l.key);
    const gw = formatIP4(sn.ip);
    return {
      fdb: [{ dev: this.device, mac: mac.toLowerCase(), dst: l.attrs.publicIP }],
      neighs: [{ dev: this.device, ip: gw, mac: mac.toLowerCase() }],
      routes: [{ dst, via: gw, dev: this.device, onlink: true }],
    };
  }

  private reportUnusable(l: Lease, why: string): void {
    if (this.unusable.has(l.key)) return;
    this.unusable.add(l.key);
    this.log.warn('skipping vxlan lease', { subnet: l.subnet ? formatIP4Net(l.subnet) : l.key, publicIP: l.attrs.publicIP, reason: why });
  }

  async stop(): Promise<void> {
    // The device, its entries and routes stay, as flannel leaves them: a restart reconciles them without a gap.
    this.routing.stop();
  }

  plannedCommands(): string[] {
    return this.transcript;
  }

  private async readLink(dev = this.device): Promise<JsonLink | null> {
    const text = await this.readIp.runIgnoringMissing(['-d', '-json', 'link', 'show', 'dev', dev]);
    const links = JSON.parse(text || '[]') as JsonLink[];
    return links[0] ?? null;
  }

  /** Why an existing vxlan device does not fit (flannel recreates it then), or '' when it does. */
  private incompatible(l: JsonLink, local: string): string {
    const d = l.linkinfo?.info_data;
    if (l.linkinfo?.info_kind !== 'vxlan' || !d) return `not a vxlan device (${l.linkinfo?.info_kind ?? 'unknown kind'})`;
    const o = this.options;
    if (d.id !== o.vni) return `VNI ${d.id} instead of ${o.vni}`;
    // iproute2 names an IPv6 local address local6 in its JSON.
    const have = d.local6 ?? d.local ?? '';
    if (have !== local) return `local address ${have || 'none'} instead of ${local}`;
    const port = o.port || 8472;
    if (d.port !== undefined && d.port !== port) return `port ${d.port} instead of ${port}`;
    if (!!d.learning !== o.learning) return `learning ${!!d.learning} instead of ${o.learning}`;
    if (!!d.gbp !== o.gbp) return `gbp ${!!d.gbp} instead of ${o.gbp}`;
    return '';
  }
}

/** The VtepMAC this host published before (same VNI), to give a recreated device the same MAC. */
function previousVtepMAC(previous: Lease | null, vni: number, v6 = false): string | null {
  const d = previous?.attrs.backendType === 'vxlan' ? (v6 ? previous.attrs.backendV6Data : previous.attrs.backendData) : undefined;
  if (!d || typeof d !== 'object') return null;
  const mac = goField(d as Record<string, unknown>, 'VtepMAC');
  const id = goField(d as Record<string, unknown>, 'VNI');
  return typeof mac === 'string' && MAC_RE.test(mac) && id === vni ? mac.toLowerCase() : null;
}
