/**
 * flannel's vxlan backend: a kernel VXLAN device flannel.<VNI> (nolearning,
 * local = our interface address) carries the overlay; per remote lease an
 * FDB entry (its VtepMAC -> its PublicIP), a permanent neighbour entry (its
 * subnet's network address -> VtepMAC) and a route `subnet via <network
 * address> dev flannel.<VNI> onlink`. With DirectRouting, a peer on our own
 * link gets a plain route via its PublicIP instead. The lease publishes
 * BackendType "vxlan" and BackendData {"VNI":1,"VtepMAC":"..."} as flannel.
 * With EnableIPv6 the same again over IPv6 on flannel-v6.<VNI>
 * (BackendV6Data, PublicIPv6); an IPv6-only network (EnableIPv4 false) has
 * only that device.
 */
import type { Backend, BackendContext, BackendLeaseAttrs } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4, formatIP4Net, formatIP6, formatIP6Net, ip4NetContains, ip6NetEqual, isIP4, parseIP4, type IP4Net, type IP6Net } from '../../net/ipaddr.js';
import { isCanonicalIP6 } from '../../net/canonical.js';
import { IpRoute } from '../../net/iproute.js';
import { linkPrefixes, linkPrefixes6, onLink, onLink6 } from '../../net/link-prefixes.js';
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
/** An IPv6 outer header is 20 bytes longer than an IPv4 one. */
const IPV6_EXTRA_OVERHEAD = 20;

interface JsonLink {
  ifname: string;
  address?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; port?: number; learning?: boolean; gbp?: boolean; link?: string } };
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly options: VxlanOptions;
  /** flannel.<VNI>: the IPv4 overlay (null on an IPv6-only network). */
  readonly device: string | null;
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
  private prefixes6: IP6Net[] = [];
  private readonly routing: KernelRouting;
  /** Leases already reported as unusable (logged once each). */
  private readonly unusable = new Set<string>();
  private readonly transcript: string[];

  constructor(
    private readonly ctx: BackendContext,
    opts: VxlanBackendOptions = {},
  ) {
    this.options = parseVxlanOptions(ctx.backendConfig);
    this.device = ctx.config.enableIPv4 && ctx.config.network ? `flannel.${this.options.vni}` : null;
    this.device6 = ctx.config.enableIPv6 && ctx.config.ipv6Network ? `flannel-v6.${this.options.vni}` : null;
    const devices = [this.device, this.device6].filter((d): d is string => d !== null);
    const runners = kernelRunners(ctx.dryRun, opts);
    this.transcript = runners.transcript;
    this.ip = runners.ip;
    this.readIp = runners.readIp;
    this.log = ctx.log.child('vxlan');
    this.routing = new KernelRouting({
      backendType: 'vxlan',
      scope: {
        ...(this.device ? { network: ctx.config.network! } : {}),
        ...(this.device6 ? { network6: ctx.config.ipv6Network! } : {}),
        routeDevs: [...devices, ctx.extIface.name],
        ownedDevs: devices,
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
    const attrs: BackendLeaseAttrs = { backendType: 'vxlan' };
    if (this.device) {
      this.vtepMAC = await this.ensureDevice(this.device, this.ctx.extIface.ifaceAddr, previousVtepMAC(previous, this.options.vni));
      attrs.backendData = { VNI: this.options.vni, VtepMAC: this.vtepMAC };
      this.prefixes = this.options.directRouting ? await linkPrefixes(this.readIp, this.ctx.extIface.name) : [];
    }
    if (this.device6) {
      // DirectRouting over IPv6: a peer whose PublicIPv6 is on our link gets a plain route via it.
      this.prefixes6 = this.options.directRouting ? await linkPrefixes6(this.readIp, this.ctx.extIface.name) : [];
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

  /**
   * The overlay MTU (subnet.env's FLANNEL_MTU). flannel says interface MTU
   * - 50 whatever the family; an IPv6 outer header is 20 bytes longer, so an
   * IPv6-only network says - 70 here, the MTU its one device really has.
   */
  mtu(): number {
    if (this.options.mtu) return this.options.mtu;
    return this.ctx.extIface.mtu - VXLAN_OVERHEAD - (this.device ? 0 : IPV6_EXTRA_OVERHEAD);
  }

  /** flannel-v6.<VNI>'s MTU: the IPv4 overlay's less the longer outer header (the same as mtu() on an IPv6-only network). */
  private mtu6(): number {
    return this.device ? this.mtu() - IPV6_EXTRA_OVERHEAD : this.mtu();
  }

  async start(ownLease: Lease): Promise<void> {
    const dev = this.device;
    if (dev) {
      if (!ownLease.subnet) throw new Error('vxlan backend: EnableIPv4 is set but our lease has no IPv4 subnet');
      this.ownSubnet = ownLease.subnet;
      // Our subnet's network address as /32, as flannel: a source address for host-to-pod traffic, no broadcast routes.
      const want = `${formatIP4(ownLease.subnet.ip)}/32`;
      const network = this.ctx.config.network!;
      await ensureOnlyAddress(this.readIp, this.ip, dev, want, (cidr) => ip4NetContains(network, parseIP4(cidr.split('/')[0]!)), this.log);
      await this.ip.run(['link', 'set', 'dev', dev, 'mtu', String(this.mtu()), 'up']);
      this.log.info('vxlan device ready', { device: dev, vni: this.options.vni, vtepMAC: this.vtepMAC, address: want, mtu: this.mtu(), directRouting: this.options.directRouting });
    }
    if (this.device6) {
      if (!ownLease.ipv6Subnet) throw new Error('vxlan backend: EnableIPv6 is set but our lease has no IPv6 subnet');
      this.ownSubnet6 = ownLease.ipv6Subnet;
      const want6 = `${formatIP6(ownLease.ipv6Subnet.ip)}/128`;
      await this.ip.run(['-6', 'addr', 'replace', want6, 'dev', this.device6, 'nodad']);
      await this.ip.run(['link', 'set', 'dev', this.device6, 'mtu', String(this.mtu6()), 'up']);
      this.log.info('vxlan IPv6 device ready', { device: this.device6, vni: this.options.vni, vtepMAC: this.vtepMAC6, address: want6, mtu: this.mtu6(), directRouting: this.options.directRouting });
    }
    this.routing.start();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.routing.handleEvents(events);
  }

  /** What a remote lease needs: its IPv4 half, and with dual stack its IPv6 half; null when neither can be used. */
  private peerState(l: Lease): PeerState | null {
    const v4 = this.device ? this.peerState4(l, this.device) : null;
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
    if (this.options.directRouting && isCanonicalIP6(ip6) && onLink6(this.prefixes6, ip6)) {
      return { routes: [{ dst: formatIP6Net(sn6), via: ip6, dev: this.ctx.extIface.name }] };
    }
    const data = l.attrs.backendV6Data;
    const mac = vtepMACOf(data);
    if (!mac || !isCanonicalIP6(ip6)) {
      this.reportUnusable(l, `BackendV6Data has no usable VtepMAC (${JSON.stringify(data)}) or PublicIPv6 ${ip6} is not IPv6`, '6');
      return null;
    }
    this.unusable.delete(`${l.key} 6`);
    return viaVtep(this.device6!, mac, ip6, formatIP6(sn6.ip), formatIP6Net(sn6));
  }

  /** The IPv4 half; null (logged once) when its BackendData cannot be used. */
  private peerState4(l: Lease, dev: string): PeerState | null {
    const sn = l.subnet;
    if (!sn || (this.ownSubnet && sn.ip === this.ownSubnet.ip)) return null;
    const dst = formatIP4Net(sn);
    if (this.options.directRouting && onLink(this.prefixes, l.attrs.publicIP)) {
      return { routes: [{ dst, via: l.attrs.publicIP, dev: this.ctx.extIface.name }] };
    }
    const data = l.attrs.backendData;
    const mac = vtepMACOf(data);
    if (!mac) {
      this.reportUnusable(l, `BackendData has no usable VtepMAC (${JSON.stringify(data)})`);
      return null;
    }
    if (!isIP4(l.attrs.publicIP)) {
      this.reportUnusable(l, `PublicIP ${l.attrs.publicIP} is not IPv4`);
      return null;
    }
    this.unusable.delete(l.key);
    return viaVtep(dev, mac, l.attrs.publicIP, formatIP4(sn.ip), dst);
  }

  /** Log once per lease and family (the halves of a dual-stack lease are usable or not on their own). */
  private reportUnusable(l: Lease, why: string, family: '4' | '6' = '4'): void {
    const tag = family === '4' ? l.key : `${l.key} 6`;
    if (this.unusable.has(tag)) return;
    this.unusable.add(tag);
    const subnet = l.subnet ? formatIP4Net(l.subnet) : l.ipv6Subnet ? formatIP6Net(l.ipv6Subnet) : l.key;
    this.log.warn('skipping vxlan lease', { subnet, publicIP: l.attrs.publicIP, reason: why });
  }

  async stop(): Promise<void> {
    // The device, its entries and routes stay, as flannel leaves them: a restart reconciles them without a gap.
    this.routing.stop();
  }

  plannedCommands(): string[] {
    return this.transcript;
  }

  private async readLink(dev: string): Promise<JsonLink | null> {
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

/** The VtepMAC of a lease's BackendData or BackendV6Data, lowercase; null when it has none usable. */
function vtepMACOf(data: unknown): string | null {
  const mac = data && typeof data === 'object' ? goField(data as Record<string, unknown>, 'VtepMAC') : undefined;
  return typeof mac === 'string' && MAC_RE.test(mac) ? mac.toLowerCase() : null;
}

/**
 * flannel's three entries for a peer behind a VTEP, either family: FDB
 * VtepMAC -> its underlay address, its subnet's address at VtepMAC, and the
 * subnet via that address onlink.
 */
function viaVtep(dev: string, mac: string, underlay: string, gw: string, dst: string): PeerState {
  return {
    fdb: [{ dev, mac, dst: underlay }],
    neighs: [{ dev, ip: gw, mac }],
    routes: [{ dst, via: gw, dev, onlink: true }],
  };
}

/** The VtepMAC this host published before (same VNI), to give a recreated device the same MAC. */
function previousVtepMAC(previous: Lease | null, vni: number, v6 = false): string | null {
  const d = previous?.attrs.backendType === 'vxlan' ? (v6 ? previous.attrs.backendV6Data : previous.attrs.backendData) : undefined;
  if (!d || typeof d !== 'object') return null;
  return goField(d as Record<string, unknown>, 'VNI') === vni ? vtepMACOf(d) : null;
}
